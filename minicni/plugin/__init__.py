"""The `minicni` plugin: the executable's entry (`main`), the commands ADD, DEL, CHECK and GC
(`commands`), STATUS (`status`), the network config (`config`) and the ADD result (`result`).

Keep this module empty of imports: the plugin executable pays for every import on every pod start.
"""
