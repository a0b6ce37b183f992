"""`twinledger twins map --endpoint URL --org ORG --out FILE`: browse any OPC-UA server and write an editable bridge
mapping for `twinledger twins run --endpoint URL --mapping FILE`.

The browse (twins.bridge.browse) follows the hierarchical references from Objects, skips the Server object, and
proposes for every Boolean or numeric scalar variable: its asset (the path of the object holding it), its signal
name, its unit (EngineeringUnits) and data type, and per asset a twin kind guessed from the signal names; all assets
belong to ``--org``. The file opens with a comment saying what to check and edit. It is the format
twins.bridge.mapping parses, so what is written is read back before it is saved.

Security: as `twins run --endpoint` (orchestrator.cli_twins_endpoints): SignAndEncrypt with the bridge's certificate
from ``--opcua-org``'s Fabric CA (default ``--org``), or ``--insecure-opcua``. Before any session the server's
endpoints are asked for (allowed without security), so a server that offers no SignAndEncrypt endpoint of our
policy is reported as such instead of as a refused connection.

Errors are one line: a bad URL, an unreachable endpoint, security refused, a file that exists (``--force``
replaces it), a server with no variable the bridge could read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from pathlib import Path
from typing import Any

from network.files import write_atomic
from network.spec_model import _NAME_RE as ORG_NAME_RE
from orchestrator import cli_inputs
from orchestrator.cli_common import UserError, home_of
from orchestrator.cli_twins_endpoints import add_security_arguments, check_url, endpoint_security
from orchestrator.twins_state import TwinsDir

HEADER = """TwinLedger bridge mapping, written by `twinledger twins map` from a browse of {url} ({when}).
EDIT IT before bridging: each asset's org and kind (machine | patient | generic, guessed from the signal names),
the asset and property names (they go into anchored records), and delete the nodes you do not want bridged.
Then: twinledger twins run --endpoint {url} --mapping {out}"""


def _org(text: str) -> str:
    if not ORG_NAME_RE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a valid org name")
    return text


async def _browse(url: str, security: Any, timeout: float) -> tuple[list, list[str]]:
    from asyncua import Client

    from twins.bridge.browse import browse_variables
    from twins.bridge.client import _close_quietly, open_client
    from twins.security import CLIENT_POLICY

    if security is not None:
        # GetEndpoints needs no security: say plainly when the server cannot do ours (else the session just fails)
        probe = Client(url, timeout=timeout)
        try:
            endpoints = await probe.connect_and_get_server_endpoints()
        finally:
            probe.disconnect_socket()
        offered = sorted({f"{e.SecurityPolicyUri.rpartition('#')[2]}/{e.SecurityMode.name.rstrip('_')}" for e in endpoints})
        if not any(e.SecurityPolicyUri == CLIENT_POLICY.URI and e.SecurityMode.name == "SignAndEncrypt"
                   for e in endpoints):
            raise UserError(f"security refused: {url} offers no {CLIENT_POLICY.URI.rpartition('#')[2]} SignAndEncrypt "
                            f"endpoint (it offers {', '.join(offered) or 'none'}); configure one on the server, or "
                            "browse with --insecure-opcua")
    client = await open_client(url, security, None, timeout=timeout, name="TwinLedger mapper")
    try:
        found = await browse_variables(client)
        namespaces = await client.get_namespace_array()
    finally:
        await _close_quietly(client, graceful=True)
    return found, namespaces


def _why(exc: BaseException) -> str:
    from asyncua import ua

    if isinstance(exc, ua.UaStatusCodeError):
        return ua.StatusCode(exc.code).name
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def cmd_map(args: argparse.Namespace) -> int:
    from asyncua import ua

    from twins.bridge.browse import propose
    from twins.bridge.mapping import MappingError, dump_mapping, parse_mapping

    url = check_url(args.endpoint)
    out: Path = args.out
    if out.exists() and not args.force:
        raise UserError(f"{out} exists; give --force to replace it (it may hold your edits)")
    if out.is_dir():
        raise UserError(f"{out} is a folder; --out names the mapping file to write")
    if not out.parent.is_dir():
        raise UserError(f"cannot write {out}: folder {out.parent} does not exist")
    home = home_of(args)
    logging.getLogger("asyncua").setLevel(logging.ERROR)  # its session-timeout notices are not the user's business
    pki = TwinsDir(home).pki
    # its own trust folder: a running bridge's (pki/trust) is not rewritten under it
    security, _ = endpoint_security(home, args, sorted({args.org, args.opcua_org or args.org}), pki,
                                    trust_dir=pki / "map-trust")
    try:
        found, namespaces = asyncio.run(asyncio.wait_for(_browse(url, security, args.timeout), args.timeout * 30))
    except UserError:
        raise
    except ConnectionRefusedError:
        raise UserError(f"cannot reach {url}: connection refused (is the server running, is the port right?)") from None
    except (asyncio.TimeoutError, TimeoutError):
        raise UserError(f"cannot reach {url}: no answer within the timeout") from None
    except OSError as exc:
        raise UserError(f"cannot reach {url}: {exc.strerror or exc}") from None
    except (ua.UaError, ua.UaStatusCodeError) as exc:
        what = "security refused" if security is not None else "the server refused the session"
        raise UserError(f"{what} by {url}: {_why(exc)}") from None
    if not found:
        raise UserError(f"{url} exposes no Boolean or numeric scalar variable below Objects: nothing to bridge")
    assets, nodes = propose(found, args.org)
    used_ns = {int(n.node_id.split(";")[0][3:]) for n in nodes if n.node_id.startswith("ns=")}
    # one namespace: name it by URI, so the mapping survives the server renumbering its namespaces at a restart
    namespace = namespaces[used_ns.pop()] if len(used_ns) == 1 and min(used_ns | {1}) > 0 else None
    from datetime import datetime, timezone

    header = HEADER.format(url=url, when=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), out=out)
    text = dump_mapping(url, namespace, assets, nodes, header)
    try:
        import yaml

        parse_mapping(yaml.safe_load(text), str(out))  # what twins run will read
    except MappingError as exc:
        raise UserError(f"the mapping proposed for {url} does not parse ({exc}); please report it") from None
    write_atomic(out, text)
    kinds = {k: sum(1 for a in assets.values() if a.kind == k) for k in ("machine", "patient", "generic")}
    summary = {"out": str(out), "endpoint": url, "variables": len(nodes), "assets": len(assets), "kinds": kinds,
               "namespace": namespace, "secure": security is not None}
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    else:
        kind_text = ", ".join(f"{n} {k}" for k, n in kinds.items() if n)
        print(f"wrote {out}: {len(nodes)} variables of {len(assets)} assets ({kind_text}) of org {args.org} from {url}. "
              f"Edit it, then: twinledger twins run --endpoint {url} --mapping {out}")
    return 0


def add_map_parser(ts: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    m = ts.add_parser("map", parents=[common], help="browse an OPC-UA server and write an editable bridge mapping",
                      description="Browse an OPC-UA server (Objects, hierarchical references, the Server object "
                                  "skipped) and write a mapping for `twins run --endpoint URL --mapping FILE`: node id "
                                  "-> asset, signal, unit, data type, with a twin kind per asset guessed from names.")
    m.add_argument("--endpoint", required=True, metavar="URL", help="the server, opc.tcp://HOST:PORT[/PATH]")
    m.add_argument("--org", required=True, type=_org, help="the org that owns this equipment (every asset's org)")
    m.add_argument("--out", required=True, type=Path, metavar="FILE", help="the mapping file to write (YAML)")
    m.add_argument("--force", action="store_true", help="replace --out if it exists")
    m.add_argument("--timeout", type=cli_inputs.finite(0.0, above=True, maximum=600.0, what="number of seconds"), default=4.0, metavar="S", help="per OPC-UA request (default 4 s)")
    add_security_arguments(m, with_org=True)
    m.set_defaults(func=cmd_map)
