"""Privileged helpers: the only processes that touch devices the daemon must not hold.

A helper answers fixed-size requests from a whitelist over a SOCK_SEQPACKET Unix
socket (one recv is one request) and nothing else. The framework here is shared by
every device family; a family supplies a `Service` (how a request is decoded and
checked against its whitelist, which requests may run concurrently, how one is run):

- `server.py`: the request loop, one thread per command in flight, the fork of a
  helper before the daemon drops privileges, and the listening socket of a helper
  run as its own unit;
- `client.py`: the daemon's side, which matches answers to waiting callers by id.

Families: NVMe (`nodeslo.nvme.helper`, CAP_SYS_ADMIN for Get Log Page) and IPMI
(`nodeslo.ipmi.helper`, no capability: uid 0 opens the root-only /dev/ipmi0). Each is
forked as its own process, so neither holds what only the other needs.
"""
