"""The standard OPC UA faces of the gateway, beside its own contract: the companion specifications
(DI, Machinery, ISA-95 Job Control, Machinery Job Management) loaded into the server, each station a
MachineryItem, the cell's jobs as a standard JobManagement object."""
