"""Test-wide settings, loaded by pytest before any test module (and before gRPC)."""

import os

# The test process talks gRPC to the session network and starts processes (bridges, simulators, CLIs) with
# subprocess.Popen; see network/__init__.py for why gRPC's fork support must be off for that.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
