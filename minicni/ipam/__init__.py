"""Node-local address management: a persistent, locked store of reservations."""
