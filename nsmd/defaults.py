"""Every default a user can change, defined once: the config (nsmd run's options) and the
modules that use them take them from here. Where NSM has the same knob, its value."""

STATE_DIR = "/var/lib/nsmd"
API_SOCKET = "/run/nsmd/nsmd.sock"
TUNNEL_PORT = 51820          # first UDP port of the tunnels (one per engine)
TOKEN_LIFETIME_S = 600.0     # NSM_MAX_TOKEN_LIFETIME
NSE_EXPIRY_S = 60.0          # NSM's registry defaultExpiration
LOCAL_MTU = 1500             # same-host vWires
TUNNEL_MTU = 1420            # 1500 - IPv6 (40) - UDP (8) - our header and tag (32)
KEEPALIVE_S = 1.0            # an idle tunnel sends a keepalive this often
HEAL_DETECT_S = 3.0          # a dead data plane is found within this
REKEY_AFTER_S = 120.0        # WireGuard's RekeyAfterTime
CONNECT_TIMEOUT_S = 15.0     # a first request is retried this long (NSM_REQUEST_TIMEOUT)
CAPTURE_MAX_BYTES = 100_000_000  # the largest file a function (capture) writes
