"""MSP folder details shared by every identity: the NodeOUs configuration.

With NodeOUs on, Fabric classifies an identity as client, peer, admin or orderer from the OU that Fabric CA
writes into its certificate (the identity type at registration), so policies can say ``Hospital1MSP.peer``
and an org admin needs no copy of its certificate in admincerts/.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from network.files import write_atomic

NODE_OUS = ("client", "peer", "admin", "orderer")


def write_nodeou_config(msp_dir: Path, ca_cert_rel: str) -> None:
    ident = {ou: {"Certificate": ca_cert_rel, "OrganizationalUnitIdentifier": ou} for ou in NODE_OUS}
    config = {
        "NodeOUs": {
            "Enable": True,
            "ClientOUIdentifier": ident["client"],
            "PeerOUIdentifier": ident["peer"],
            "AdminOUIdentifier": ident["admin"],
            "OrdererOUIdentifier": ident["orderer"],
        }
    }
    # Atomic: enrolment takes an MSP with a config.yaml as done, so a crash must not leave half of one.
    write_atomic(msp_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))
