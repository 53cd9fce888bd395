"""Slow and idle clients cannot lock valid ones out of the HTTP service (ppufo/inference/http_limits.py).

A real server on 127.0.0.1 with small limits (a few connections, deadlines of a second or two) so that
each attack here is a handful of sockets for a few seconds. Attackers connect from 127.0.0.2 and up
(all loopback), valid clients from 127.0.0.1; benchmark/serve_load.py runs the full-size attacks."""
import select
import socket
import time

import numpy as np
import pytest

from serving_fakes import GREEN, RED, FakeRecognizer, get, post, read_answer, request

HEAD = b"POST /predict HTTP/1.1\r\nHost: t\r\n"


def attacker(port, n=2, sent=HEAD):
    """A socket from 127.0.0.<n> that has sent ``sent`` (a partial request, or nothing)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(f"127.0.0.{n}", 0))
    if sent:
        s.sendall(sent)
    return s


def closed_within(sock, seconds):
    """(status or None, seconds) when the server closes ``sock``; fails if it stays open ``seconds``."""
    sock.settimeout(seconds)
    start = time.time()
    try:
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    except ConnectionResetError:
        pass
    except socket.timeout:
        pytest.fail(f"the connection was still open after {seconds} s")
    return (int(data.split(b" ")[1]) if data else None), time.time() - start


def timed_post(port, body=GREEN):
    start = time.time()
    status, _ = post(port, body)
    return status, time.time() - start


def test_a_client_trickling_its_headers_is_cut_at_the_header_deadline(server):
    """Activity does not extend the deadline: one header line every 0.3 s, inactivity timeout 30 s."""
    srv = server(timeout=30, header_timeout=1, request_timeout=3)
    slow = attacker(srv.port)
    start = time.time()
    for i in range(20):
        if select.select([slow], [], [], 0.3)[0]:  # the server answered
            break
        slow.sendall(b"X-Slow-%d: 1\r\n" % i)
    assert read_answer(slow) == (408, {"error": "Request Timeout: request line and headers not received within 1 s"})
    assert 0.9 < time.time() - start < 2.5
    slow.close()
    assert get(srv.port)[1]["connections"]["timed_out"] == 1


def test_a_body_trickling_in_is_cut_at_the_request_deadline_with_a_408(server):
    srv = server(timeout=30, header_timeout=1, request_timeout=2)
    slow = attacker(srv.port, sent=HEAD + b"Content-Length: 5000\r\n\r\n" + RED[:10])
    start = time.time()
    for _ in range(4):  # 1.2 s of body: past the header deadline, still alive
        time.sleep(0.3)
        slow.sendall(RED[:10])
    status, _ = closed_within(slow, 5)
    assert status == 408 and 1.9 < time.time() - start < 4.5


def test_a_body_still_arriving_does_not_hold_back_another_clients_batch(server):
    """Batched with a long wait: the batcher waits only for requests being decoded, and waitress hands a
    request to a worker only once its body is in, so a slow upload is not one it waits for."""
    srv = server(batch_wait_ms=3000, timeout=30, header_timeout=10, request_timeout=20)
    slow = attacker(srv.port, sent=request(RED)[:-len(RED) + 10])  # headers and 10 bytes of the body
    time.sleep(0.3)
    status, took = timed_post(srv.port)
    assert status == 200 and took < 1.0
    slow.sendall(RED[10:])
    assert read_answer(slow)[0] == 200
    slow.close()
    assert get(srv.port)[1]["batching"]["requests"] >= 2


def test_a_connection_that_sends_nothing_is_closed_at_the_header_deadline(server):
    srv = server(timeout=30, header_timeout=1, request_timeout=2)
    silent = attacker(srv.port, sent=b"")
    status, waited = closed_within(silent, 5)
    assert status == 408 and 0.9 < waited < 2.5


def test_one_address_holds_at_most_per_client_connections(server):
    srv = server(per_client=3)
    held = [attacker(srv.port, sent=b"") for _ in range(3)]
    extra = attacker(srv.port, sent=b"")
    status, body = read_answer(extra)
    assert status == 429 and "3 connections are already open from 127.0.0.2" in body["error"]
    assert post(srv.port, GREEN)[0] == 200  # another address is not affected
    held[0].close()
    time.sleep(0.3)
    assert post(srv.port, GREEN, source="127.0.0.2")[0] == 200  # below the cap again
    for s in held[1:] + [extra]:
        s.close()


def test_at_the_connection_limit_the_longest_idle_connection_makes_room(server):
    srv = server(connection_limit=4, per_client=0, timeout=30, header_timeout=20, request_timeout=30)
    keepalive = socket.create_connection(("127.0.0.1", srv.port), timeout=10)  # answered, then idle
    keepalive.sendall(b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s" % (len(RED), RED))
    answer = b""
    while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < int(
            answer.lower().split(b"content-length: ")[1].split(b"\r\n")[0]):
        answer += keepalive.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200")
    time.sleep(0.1)
    silent = [attacker(srv.port, n, b"") for n in (2, 3, 4)]  # the limit is reached
    time.sleep(0.2)
    status, took = timed_post(srv.port)
    assert status == 200 and took < 1  # at once, not when --timeout (30 s) frees a slot
    assert closed_within(keepalive, 2)[0] is None  # the keep-alive one idled longest: closed, no answer
    for s in silent:
        s.close()


def test_at_the_connection_limit_the_slowest_arriving_request_makes_room(server):
    srv = server(connection_limit=4, per_client=0, timeout=30, header_timeout=20, request_timeout=30)
    trickling = []
    for n in (2, 3, 4, 5):
        trickling.append(attacker(srv.port, n))
        time.sleep(0.05)
    status, took = timed_post(srv.port)
    assert status == 200 and took < 1
    status, _ = closed_within(trickling[0], 2)  # the oldest partial request was dropped with a 503
    assert status == 503
    assert get(srv.port)[1]["connections"]["closed_slow"] >= 1
    for s in trickling[1:]:
        s.close()


def test_when_every_connection_has_a_request_in_the_workers_hands_a_new_one_gets_503(server):
    rec = FakeRecognizer(delay=1.0)
    srv = server(rec, threads=1, connection_limit=2, per_client=0)
    busy = [socket.create_connection(("127.0.0.1", srv.port), timeout=10) for _ in range(2)]
    for s in busy:
        s.sendall(request(RED))
    time.sleep(0.3)
    start = time.time()
    status, body = post(srv.port, GREEN)
    assert status == 503 and "have requests being answered" in body["error"] and time.time() - start < 0.5
    assert [read_answer(s)[0] for s in busy] == [200, 200]  # the busy ones are not dropped
    for s in busy:
        s.close()


def test_a_slowloris_and_an_idle_flood_from_many_addresses_do_not_delay_valid_clients(server):
    """Twice the connection limit in trickling and silent sockets; every valid request is answered
    promptly while they hold on (and reconnect when closed)."""
    srv = server(connection_limit=10, per_client=4, timeout=30, header_timeout=20, request_timeout=30)
    quiet = sorted(timed_post(srv.port)[1] for _ in range(5))
    attack = [attacker(srv.port, 2 + i % 6, HEAD if i % 2 else b"") for i in range(20)]
    results = []
    for i in range(10):
        for j, s in enumerate(attack):  # trickle a header line on each; reopen the ones closed
            try:
                s.sendall(b"X-%d: 1\r\n" % i if j % 2 else b"")
            except OSError:
                s.close()
                try:
                    attack[j] = attacker(srv.port, 2 + j % 6, HEAD if j % 2 else b"")
                except OSError:
                    pass
        results.append(timed_post(srv.port, RED if i % 2 else GREEN))
    assert [status for status, _ in results] == [200] * 10
    assert max(t for _, t in results) < max(1.0, 10 * quiet[-1])
    for s in attack:
        s.close()


def test_room_is_made_from_the_longest_waiting_connection_not_the_newest(server):
    """A client just connected (nothing read from it yet) is not closed for the next one: the
    trickling connection that has waited longest is."""
    srv = server(connection_limit=4, per_client=0, timeout=30, header_timeout=20, request_timeout=30)
    trickling = []
    for n in (2, 3, 4):
        trickling.append(attacker(srv.port, n))
        time.sleep(0.05)
    fresh = socket.create_connection(("127.0.0.1", srv.port), timeout=10)  # fills the limit, sends nothing yet
    time.sleep(0.3)
    trickling.append(attacker(srv.port, 5))  # one more: room must be made
    assert closed_within(trickling[0], 2)[0] == 503
    fresh.sendall(request(GREEN))
    assert read_answer(fresh)[0] == 200
    for s in [fresh] + trickling[1:]:
        s.close()


def test_shutdown_closes_every_open_connection_and_ends_run():
    """shutdown() closes the channels of the server's own socket map (no waitress internals), and the
    end of run() stops the batcher threads."""
    import threading

    from ppufo.inference.batcher import BatcherClosed
    from ppufo.inference.served_task import ServedTask
    from ppufo.inference.serving import FeatureApp, FeatureServer
    task = ServedTask("person", FakeRecognizer())
    srv = FeatureServer(FeatureApp([task], 3.0), port=0, timeout=30, header_timeout=20, request_timeout=30)
    runner = threading.Thread(target=srv.run, daemon=True)
    runner.start()
    idle = [attacker(srv.port, sent=b"") for _ in range(2)]
    deadline = time.time() + 5
    while len(srv.server.active_channels) < 2 and time.time() < deadline:
        time.sleep(0.05)
    channels = set(srv.server.active_channels.values())
    assert len(channels) == 2 and channels <= set(srv.server.socket_map.values())
    assert srv.server in srv.server.socket_map.values()  # the listener is in the same map
    assert post(srv.port, RED)[0] == 200 and task.batcher.alive
    srv.shutdown()
    for s in idle:
        assert closed_within(s, 5)[0] is None  # closed without an answer
    runner.join(5)
    assert not runner.is_alive() and not task.batcher.alive
    with pytest.raises(BatcherClosed, match="the person model's batcher is closed: the service is shutting down"):
        task.batcher(np.zeros(3, np.float32))
