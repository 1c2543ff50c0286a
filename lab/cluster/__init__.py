"""The lab's cluster: how its nodes and their agents are built."""
