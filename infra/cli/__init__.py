"""The `titan` command line. Entry points only build commands and hand them to the bus.

Exit codes (SPEC §8): 0 ok, 1 a check failed, 2 bad usage or input, 3 a dependency unreachable,
4 another writer holds the account. Each command group is a module of this package.
"""

from __future__ import annotations

import sys
from importlib import import_module

import typer
from rich.markup import escape

from commands.lease import LeaseRefused
from commands.ports import LedgerError, LedgerUnreachable
from infra.cli.common import EXIT_BAD_INPUT, EXIT_BUSY, EXIT_UNREACHABLE, JsonOpt, err, out
from infra.cli.common import print_json as _print_json
from infra.core import compiled_core_active
from infra.version import titan_version

app = typer.Typer(
    help="titan: the event-sourced control plane and replayable ledger of the Titan trading system.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
policy_app = typer.Typer(help="Risk policies: show the active one, hash a file, activate one.", no_args_is_help=True)
ledger_app = typer.Typer(help="The ledger itself: verify its hash chain.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")
app.add_typer(ledger_app, name="ledger")


@app.command()
def version(as_json: JsonOpt = False) -> None:
    """Print the version and whether the compiled core is active."""
    info = {
        "version": titan_version(),
        "core": "compiled" if compiled_core_active() else "interpreted",
        "python": sys.version.split()[0],
    }
    if as_json:
        _print_json(info)
    else:
        out.print(f"titan {info['version']} (core: {info['core']}, python {info['python']})")


# Each command group lives in its own module infra/cli/<area>.py with register(app, groups).
AREAS: tuple[str, ...] = (
    "account", "policy", "ledger", "checkpoints", "replay", "projections", "db", "demo", "bench", "nats", "relay",
    "keys", "serve", "dlq", "paper", "console",
)
GROUPS: dict[str, typer.Typer] = {"policy": policy_app, "ledger": ledger_app}
for _area in AREAS:
    import_module(f"infra.cli.{_area}").register(app, GROUPS)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except ImportError as exc:  # a stale compiled core refuses to load
        err.print(f"[bold red]error:[/] {escape(str(exc))}")
        sys.exit(EXIT_UNREACHABLE)
    except LedgerUnreachable as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}")
        sys.exit(EXIT_UNREACHABLE)
    except LeaseRefused as exc:  # another writer holds the account: nothing was written
        err.print(f"[bold red]error:[/] {escape(str(exc))}")
        sys.exit(EXIT_BUSY)
    except LedgerError as exc:  # a corrupt record, a ledger that cannot be written: said plainly
        err.print(f"[bold red]error:[/] {escape(str(exc))}")
        sys.exit(EXIT_BAD_INPUT)


if __name__ == "__main__":
    main()
