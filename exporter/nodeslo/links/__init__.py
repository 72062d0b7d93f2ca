"""Links: PCIe functions and their ports, NICs and RDMA ports, read from sysfs.

Readers and pure decoders only; the collectors (`collectors/pcie.py`,
`collectors/network.py`) turn what they return into metric families, and the
inventory and `nodeslo check` read the same objects.
"""
