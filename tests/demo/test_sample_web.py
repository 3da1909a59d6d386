"""The demo's sample web (webtext/demo/web.py), served on loopback."""

import socket
import time

from webtext.demo import web as sample_web


def test_a_client_hanging_up_on_the_drip_is_no_server_traceback(capsys):
    web = sample_web.make_sample_web(seed=0)
    host, path = next((h, p) for (h, p), page in web.pages.items() if page.delay_per_chunk)
    with sample_web.SampleServer(web) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            assert s.recv(64).startswith(b"HTTP/1.1 200")
        time.sleep(0.5)  # the server writes its next chunks into the closed connection
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:   # and still serves
            s.sendall(f"GET /robots.txt HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            assert s.recv(64).startswith(b"HTTP/1.1 200")
    err = capsys.readouterr().err
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_the_demo_finds_its_job_files_by_default():
    """`make demo` runs `webtext demo` with no flags: its default job and training config must exist."""
    import os

    from webtext.cli import command_parser

    parser, _ = command_parser("demo")
    args = parser.parse_args([])
    assert os.path.isfile(args.job) and args.job.endswith("jobs/sample-local.toml")
    assert os.path.isfile(args.train_config)
