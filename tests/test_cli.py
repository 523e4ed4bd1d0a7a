"""The command line as a user meets it: the command list of ``biblioedge --help``."""

import argparse
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

CLI = [sys.executable, "-m", "biblioedge"]


def test_help_lists_the_commands_and_hides_the_demo_child() -> None:
    out = subprocess.run([*CLI, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    listed = out.stdout.split("positional arguments:")[1].split("options:")[0]
    for command in ("agent", "central", "provision", "demo", "bench", "kiosk", "release"):
        assert f"\n    {command} " in listed, listed
    assert "SUPPRESS" not in out.stdout and "demo-fleet" not in out.stdout
    # the demo's own child still parses: it is hidden, not gone
    child = subprocess.run(
        [*CLI, "demo-fleet", "--help"], capture_output=True, text=True, timeout=60
    )
    assert child.returncode == 0 and "--token-file" in child.stdout, child.stderr


def _undocumented(parser: argparse.ArgumentParser, path: str) -> Iterator[str]:
    if parser.description is None:
        yield f"{path}: no description"
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _undocumented(child, f"{path} {name}")
        elif not action.help and not isinstance(action, argparse._HelpAction):
            yield f"{path} {'/'.join(action.option_strings) or action.dest}: no help"


def test_every_command_and_option_says_what_it_is_for() -> None:
    from biblioedge.cli import build_parser

    parser = build_parser()
    assert list(_undocumented(parser, "biblioedge")) == []
    # a subcommand's own --help carries the line its parent lists it with
    out = subprocess.run(
        [*CLI, "config", "check", "--help"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and "the TOML file to check" in out.stdout
    assert out.stdout.split("positional arguments:")[0].strip().count("\n") >= 2, out.stdout


def test_provision_token_without_the_ca_says_how_to_trust_central(tmp_path: Path) -> None:
    """central's HTTPS is signed by its own CA: the first mistake a new IT person makes."""
    from biblioedge.provisioning.pki import DeviceCA, cert_pem, key_pem, new_key

    ca = DeviceCA.create()
    key = new_key()
    (tmp_path / "server.pem").write_bytes(
        cert_pem(ca.issue_server(key.public_key(), ["127.0.0.1"], 1)) + key_pem(key)
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "server.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:  # handshakes only: the client gives up before any HTTP
        with listener:
            for _ in range(2):
                conn, _ = listener.accept()
                try:
                    ctx.wrap_socket(conn, server_side=True).close()
                except (ssl.SSLError, OSError):
                    conn.close()

    threading.Thread(target=serve, daemon=True).start()
    other = tmp_path / "other-ca.crt"
    other.write_bytes(cert_pem(DeviceCA.create().cert))
    argv = [*CLI, "provision", "token", "--site", "s", "--role", "gate", "--device", "g1"]
    argv += ["--central", f"https://127.0.0.1:{port}", "--api-token", "x"]
    for extra, hint in (([], "give it with --cacert"), (["--cacert", str(other)], "is not the CA")):
        out = subprocess.run([*argv, *extra], capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and hint in out.stderr, out.stderr
        assert "Traceback" not in out.stderr
