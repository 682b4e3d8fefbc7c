"""The OPC UA adapter (asyncua): the contract's methods and tags, the address space, calls, publishing
after commit, and the transport's limits and logins. ``server.OpcUaServer`` is its face."""
