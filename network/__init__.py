"""network package: the consortium's Fabric network (spec, CAs, configs, supervisor) and the clients that talk to it.

Every TwinLedger process that uses gRPC imports this package first, so it is where gRPC's fork support is
turned off before gRPC loads. Our processes fork only to exec (subprocess.Popen: the supervisor's nodes, the
twins' simulators and bridge, the Flower processes, the peer CLI). With fork support on, grpcio >= 1.81 restarts
its epoll poller thread in the forked child, Popen's close_fds then closes that epoll fd before exec, and the
child aborts (SIGABRT, "Epoll1Poller encountered epoll_wait error: Bad file descriptor") before it ever runs:
grpc/grpc#43055. It struck a bridge restart in CI once. An explicit setting in the environment wins.
"""

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
