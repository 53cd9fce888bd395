"""The service's gallery routes: absent (404) unless the operator turns them on, then each bad request
gets its own status and JSON error, changes are searched at once, saved only when asked, and adds
running beside searches leave a consistent gallery (the stand-in model: feature = mean colour)."""
import threading

import numpy as np
import pytest
from PIL import Image

from ppufo.cli import serve as serve_cli
from ppufo.inference.gallery import GalleryIndex
from ppufo.inference.served_task import ServedTask
from helpers import bomb_png
from serving_fakes import GREEN, RED, FakeRecognizer, check_bad_request, encode, exchange, get, on_task, post

YELLOW = encode(Image.new("RGB", (20, 20), (200, 200, 10)))
ORANGE = encode(Image.new("RGB", (20, 20), (200, 120, 40)))  # red, then green, then blue


def rgb_gallery():
    return GalleryIndex(np.eye(3, dtype=np.float32), ["red", "green", "blue"], ["r.jpg", "g.jpg", "b.jpg"])


def top(port, image, k=1):
    status, body = post(port, image, f"/predict?topk={k}")
    assert status == 200, body
    return [(h["id"], h["label"]) for h in body["top"]]


@pytest.mark.parametrize("path", ["/gallery/add?label=x", "/gallery/remove?id=0"])
def test_gallery_routes_are_absent_unless_turned_on(server, path):
    srv = server(index=rgb_gallery())
    status, body = post(srv.port, YELLOW, path)
    assert status == 404 and "gallery updates are off" in body["error"] and "--allow_gallery_updates" in body["error"]
    status, _ = exchange(srv.port, b"GET " + path.encode() + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert status == 404
    assert top(srv.port, ORANGE, 3) == [(0, "red"), (1, "green"), (2, "blue")]  # nothing changed
    assert (get(srv.port)[1]["gallery"], get(srv.port)[1]["gallery_updates"]) == (3, "off")


def test_added_items_are_found_and_removed_ones_never(server):
    srv = server(index=rgb_gallery(), allow_updates=True)
    status, body = post(srv.port, YELLOW, "/gallery/add?label=yellow&path=shop/y.jpg")
    assert status == 200 and (body["id"], body["label"], body["path"], body["gallery"]) == (3, "yellow", "shop/y.jpg", 4)
    assert body["saved"] is False and "in memory only" in body["note"]
    assert top(srv.port, YELLOW) == [(3, "yellow")]
    status, body = post(srv.port, b"", "/gallery/remove?id=3&label=red")
    assert status == 200 and sorted(body["removed"]) == [0, 3] and body["gallery"] == 2
    assert {label for _, label in top(srv.port, YELLOW, 10)} == {"green", "blue"}
    assert top(srv.port, RED) != [(0, "red")]
    health = get(srv.port)[1]
    assert (health["gallery"], health["gallery_updates"], health["index_type"]) == (2, "in memory", "flat")


GALLERY_BAD_REQUESTS = [
    ((YELLOW, "/gallery/add"), 400, "label missing: give ?label=<text>"),
    ((YELLOW, "/gallery/add?label="), 400, "label='': expected 1 to 256 printable characters"),
    ((YELLOW, "/gallery/add?label=" + "x" * 257), 400, "expected 1 to 256 printable characters"),
    ((YELLOW, "/gallery/add?label=a%0Ab"), 400, "label='a\\nb'"),
    ((YELLOW, "/gallery/add?label=a&label=b"), 400, "label given 2 times"),
    ((YELLOW, "/gallery/add?label=a&path="), 400, "path='': expected 1 to 256"),
    ((b"", "/gallery/add?label=a"), 400, "empty body"),
    ((b"junk", "/gallery/add?label=a"), 400, "not a JPEG/PNG/BMP/WEBP image"),
    ((YELLOW, "/gallery/add?label=a", b"-"), 411, "Content-Length required"),
    ((bomb_png(13000, 13000), "/gallery/add?label=a"), 413, "13000x13000 = 169000000 pixels"),
    ((b"", "/gallery/remove"), 400, "nothing to remove: give id=<gallery id> and/or label=<label>"),
    ((b"", "/gallery/remove?id=abc"), 400, "id='abc': expected a gallery id"),
    ((b"", "/gallery/remove?id=" + "9" * 19), 400, "expected a gallery id"),
    ((b"", "/gallery/remove?id=7"), 404, "no gallery item with id 7 (nothing removed)"),
    ((b"", "/gallery/remove?label=mauve"), 404, "no gallery item with label 'mauve'"),
    ((b"", "/gallery/remove?label=red&label=green&label=blue"), 409, "would leave the gallery empty"),
    ((YELLOW, "/gallery/nowhere"), 404, "unknown path /gallery/nowhere"),
]


# each bad gallery request to the bare route, then to /gallery/<add|remove>/<task>
GALLERY_BAD_ON_BOTH_ROUTES = [(*bad, "/predict") for bad in GALLERY_BAD_REQUESTS] + [
    (on_task(r, "person"), code, message, "/predict/person") for r, code, message in GALLERY_BAD_REQUESTS
    if r[1].startswith(("/gallery/add", "/gallery/remove"))]


@pytest.mark.parametrize("request_, code, message, valid", GALLERY_BAD_ON_BOTH_ROUTES)
def test_each_bad_gallery_request_gets_its_status_and_changes_nothing(server, request_, code, message, valid):
    srv = server(index=rgb_gallery(), allow_updates=True)
    check_bad_request(srv, request_, code, message, valid)
    assert get(srv.port)[1]["gallery"] == 3


def test_a_wrong_method_on_a_gallery_route_is_405(server):
    srv = server(index=rgb_gallery(), allow_updates=True)
    status, body = exchange(srv.port, b"GET /gallery/add?label=x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert status == 405 and "POST /gallery/add and /gallery/remove" in body["error"]


def test_changes_reach_disk_only_when_asked(server, tmp_path):
    saved, memory = tmp_path / "saved", tmp_path / "memory"
    for folder in (saved, memory):
        rgb_gallery().save(str(folder))
    on_disk = server(index=GalleryIndex.load(str(saved)), allow_updates=True, save_dir=str(saved))
    in_memory = server(index=GalleryIndex.load(str(memory)), allow_updates=True)
    for srv in (on_disk, in_memory):
        assert post(srv.port, YELLOW, "/gallery/add?label=yellow")[0] == 200
        assert post(srv.port, b"", "/gallery/remove?label=blue")[0] == 200
    kept = GalleryIndex.load(str(saved))
    assert (kept.ids, kept.labels) == ([0, 1, 3], ["red", "green", "yellow"]) and kept.revision == 3
    assert GalleryIndex.load(str(memory)).labels == ["red", "green", "blue"]


def test_a_failed_save_says_the_change_is_in_memory_only(server, tmp_path):
    rgb_gallery().save(str(tmp_path))
    srv = server(index=GalleryIndex.load(str(tmp_path)), allow_updates=True, save_dir=str(tmp_path))
    other = GalleryIndex.load(str(tmp_path))
    other.add(np.ones((1, 3), np.float32), ["white"], ["w.jpg"])
    other.save(str(tmp_path))  # another writer saved in between
    status, body = post(srv.port, YELLOW, "/gallery/add?label=yellow")
    assert status == 500 and "added as id 3 in memory, but saving the gallery failed (GalleryChanged" in body["error"]
    assert top(srv.port, YELLOW) == [(3, "yellow")]
    assert GalleryIndex.load(str(tmp_path)).labels[-1] == "white"  # the other writer's save is kept


def test_adds_beside_searches_leave_a_consistent_gallery(server):
    srv = server(index=rgb_gallery(), allow_updates=True, threads=4)
    shades = [encode(Image.new("RGB", (8, 8), (40 + 4 * i, 90, 200 - 3 * i))) for i in range(30)]
    results, ids = [], []

    def adder(part):
        for i in range(part, 30, 2):
            status, body = post(srv.port, shades[i], f"/gallery/add?label=shade{i}")
            results.append(status)
            ids.append(body.get("id"))

    def searcher():
        for _ in range(30):
            status, body = post(srv.port, YELLOW, "/predict?topk=40")
            results.append(status)
            assert all(h["label"] in ("red", "green", "blue") or h["label"].startswith("shade") for h in body["top"])
    threads = [threading.Thread(target=adder, args=(p,)) for p in (0, 1)] + [threading.Thread(target=searcher)
                                                                             for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 90 and sorted(ids) == list(range(3, 33))
    assert get(srv.port)[1]["gallery"] == 33
    for i in (0, 17, 29):
        hit = post(srv.port, shades[i], "/predict?topk=1")[1]["top"][0]
        assert hit["label"] == f"shade{i}" and hit["score"] > 0.9999


def test_serve_index_type_flag_reaches_the_settings():
    a = serve_cli.parse_args(["--model_dir", "m", "--index_dir", "i", "--index_type", "hnsw"])
    settings = serve_cli.service_settings(a).index_settings
    assert (settings.index_type, settings.ef_search) == ("hnsw", 64)


def test_updates_need_a_gallery_and_saving_needs_updates(capsys):
    with pytest.raises(ValueError, match="gallery updates need a gallery to update: give --index_dir"):
        ServedTask("person", FakeRecognizer(), None, allow_updates=True)
    with pytest.raises(ValueError, match="--save_gallery_updates needs --allow_gallery_updates"):
        ServedTask("person", FakeRecognizer(), rgb_gallery(), save_dir="x")
    with pytest.raises(SystemExit) as e:
        serve_cli.parse_args(["--model_dir", "m", "--save_gallery_updates"])
    assert e.value.code == 2 and "--save_gallery_updates needs --allow_gallery_updates" in capsys.readouterr().err
