"""The CNI spec versions this plugin serves, and its VERSION answer (imports nothing).

Runtimes call VERSION far more often than ADD (podman asks every plugin of every
network on every command), so its answer is prepared here without importing
json or the protocol layer.
"""

SUPPORTED_VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")

# skel prints its own library version as cniVersion rather than echoing the
# input; every runtime decoder accepts that.
_QUOTED = ", ".join(f'"{v}"' for v in SUPPORTED_VERSIONS)
VERSION_JSON = f'{{"cniVersion": "1.1.0", "supportedVersions": [{_QUOTED}]}}'
