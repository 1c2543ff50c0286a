"""What the agent installs and keeps on the host: the plugin (bundle or launcher), the conflist and
the agent's own state."""
