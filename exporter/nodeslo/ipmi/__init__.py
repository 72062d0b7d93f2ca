"""The BMC over the kernel's IPMI driver: request whitelist, transports, pure decoders.

`requests.py` (the whitelist and the errors), `ioctl.py` (/dev/ipmi0, run by the
privileged helper only), `helper.py`/`client.py` (the helper on the shared privsep
framework and the daemon's side of it), `recording.py` (record and replay exchanges),
decoders without I/O (`device.py`, `sdr.py`, `sensor.py`, `sel.py`, `codes.py`),
`bmc.py` (the command sequences: SDR walk, SEL reads) and `poller.py` (the background
rounds the collector reads).
"""
