"""``biblioedge models …`` and ``biblioedge face …``: model store and face diagnostics for IT."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

# what a command runs is imported inside its function (why: cli/agent.py)


def _store(args: argparse.Namespace) -> Any:
    from biblioedge.models.store import ModelStore

    return ModelStore(args.data / "models")


def _out(doc: Any, as_json: bool, human: str) -> None:
    sys.stdout.write((json.dumps(doc, ensure_ascii=False) if as_json else human) + "\n")


def _progress(label: str) -> Any:
    """Progress on stderr every 10 %: hashing a 100 MB model on a Pi takes a while."""
    last = [-10]

    def show(done: int, total: int) -> None:
        pct = int(100 * done / max(total, 1))
        if pct >= last[0] + 10 or (pct == 100 and last[0] != 100):
            sys.stderr.write(f"{label} {pct}%\n")
            last[0] = pct

    return show


def cmd_models(args: argparse.Namespace) -> int:
    from biblioedge.models.engine import check_model
    from biblioedge.models.manifest import load_manifest

    store = _store(args)
    if args.models_cmd == "add":
        manifest = store.add(
            args.file, load_manifest(args.manifest), progress=_progress(f"hashing {args.file.name}")
        )
        _out({"added": manifest.ref}, args.json, f"added {manifest.ref}")
    elif args.models_cmd == "list":
        rows = [
            {
                "ref": s.manifest.ref,
                "task": s.manifest.task,
                "layout": s.manifest.layout,
                "active": s.active,
                "threshold": s.manifest.threshold,
            }
            for s in store.list()
        ]
        text = "\n".join(
            f"{'*' if r['active'] else ' '} {r['ref']:32} {r['task']:8} {r['layout']}" for r in rows
        )
        _out(rows, args.json, text or "(no models; the dlib backend is used)")
    elif args.models_cmd == "verify":
        result = store.verify()
        text = "\n".join(f"{ref}: {status}" for ref, status in result.items())
        _out(result, args.json, text or "(no models)")
        return 0 if all(v == "ok" for v in result.values()) else 1
    elif args.models_cmd == "activate":
        store.activate(args.ref, check=check_model)
        _out({"active": args.ref}, args.json, f"{args.ref} is active")
    elif args.models_cmd == "rollback":
        ref = store.rollback(args.task)
        _out({"active": ref}, args.json, f"{args.task}: {ref or 'built-in dlib backend'}")
    return 0


def _engine(args: argparse.Namespace, role: str) -> Any:
    from biblioedge.models.engine import FaceEngine

    store = _store(args) if (args.data / "models").exists() or args.model else None
    kw = {role: args.model} if args.model else {}
    return FaceEngine(store, **kw)


def cmd_face(args: argparse.Namespace) -> int:
    from biblioedge.models.image import read_image

    if args.face_cmd == "detect":
        engine = _engine(args, "detector")
        image = read_image(args.image)
        t0 = time.perf_counter()
        dets = engine.detect(image)
        ms = (time.perf_counter() - t0) * 1000
        doc = {
            "model": engine.detector_name,
            "image": str(args.image),
            "ms": round(ms, 1),
            "faces": [d.as_dict() for d in dets],
        }
        human = f"{len(dets)} face(s) in {ms:.0f} ms ({engine.detector_name})\n" + "\n".join(
            f"  box {d.as_dict()['box']} score {d.score:.3f}" for d in dets
        )
        _out(doc, args.json, human)
        return 0
    engine = _engine(args, "embedder")
    if args.face_cmd == "embed":
        image = read_image(args.image)
        t0 = time.perf_counter()
        if args.aligned:
            vec = engine.embed_aligned([image])[0]
            face = None
        else:
            det, vec = engine.embed_largest(image)
            face = det.as_dict()
        ms = (time.perf_counter() - t0) * 1000
        doc = {
            "model": engine.embedder.name,
            "dim": int(vec.shape[0]),
            "ms": round(ms, 1),
            "face": face,
            "embedding": [round(float(v), 6) for v in vec],
        }
        _out(doc, args.json, f"{vec.shape[0]}-d embedding in {ms:.0f} ms ({engine.embedder.name})")
        return 0
    a, b = read_image(args.a), read_image(args.b)
    _, va = engine.embed_largest(a)
    _, vb = engine.embed_largest(b)
    result = engine.compare(va, vb)
    doc = {
        "model": engine.embedder.name,
        "score": result.score,
        "threshold": result.threshold,
        "decision": "match" if result.match else "no_match",
    }
    word = "same person" if result.match else "different people"
    _out(doc, args.json, f"{word}: score {result.score:.4f} (threshold {result.threshold})")
    return 0


def cmd_gallery(args: argparse.Namespace) -> int:
    from biblioedge.agent.gallery_store import GalleryStore, load_or_create_key
    from biblioedge.agent.store import Patron, Store
    from biblioedge.models.image import read_image
    from biblioedge.names import greeting_name

    store = Store(args.data / "agent.sqlite3")
    templates = GalleryStore(store, load_or_create_key(args.data / "keys" / "template.key"))
    try:
        if args.gallery_cmd == "enroll":
            engine = _engine(args, "embedder")
            vectors = [engine.embed_largest(read_image(p))[1] for p in args.images]
            import numpy as np

            templates.put(args.patron, np.vstack(vectors), engine.embedder.name)
            name = greeting_name(args.name)  # all the gate keeps of the name
            store.upsert_patrons(
                [Patron(args.patron, args.barcode or args.patron, name, "active", args.expires)]
            )
            _out(
                {"enrolled": args.patron, "templates": len(vectors), "model": engine.embedder.name},
                args.json,
                f"enrolled {args.patron} ({name}) with {len(vectors)} template(s)",
            )
        elif args.gallery_cmd == "list":
            rows = store.conn.execute(
                "SELECT g.patron_id, count(*), g.model, p.display_name FROM gallery_templates g"
                " LEFT JOIN patron_cache p USING (patron_id) GROUP BY g.patron_id, g.model"
            ).fetchall()
            docs = [
                {"patron_id": r[0], "templates": r[1], "model": r[2], "name": r[3]} for r in rows
            ]
            _out(
                docs,
                args.json,
                "\n".join(
                    f"{d['patron_id']:12} {d['templates']} {d['model']} {d['name'] or ''}"
                    for d in docs
                )
                or "(empty)",
            )
        elif args.gallery_cmd == "remove":
            removed = templates.delete([args.patron])
            store.remove_patrons([args.patron])
            _out({"removed": removed}, args.json, f"removed {removed} template(s) of {args.patron}")
    finally:
        store.close()
    return 0


def data_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("BIBLIOEDGE_AGENT_DATA_DIR", "/var/lib/biblioedge")),
        help="agent data directory; models live in DATA/models "
        "(default: $BIBLIOEDGE_AGENT_DATA_DIR or /var/lib/biblioedge)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")


def _register_models(sub: Any) -> None:
    p = sub.add_parser(
        "models",
        help="the on-device model store",
        description="Add, list, verify, activate and roll back face models. Only files whose "
        "sha256 matches their manifest are stored; activation loads the model once and refuses "
        "it if its outputs do not match the manifest. With no active model the built-in dlib "
        "backend is used.",
    )
    msub = p.add_subparsers(dest="models_cmd", required=True, metavar="ACTION")
    a = msub.add_parser("add", help="add a model file with its manifest (JSON)")
    a.add_argument("file", type=Path, help="the ONNX model file")
    a.add_argument("--manifest", type=Path, required=True, help="its signed manifest")
    data_arg(a)
    for name, text in (
        ("list", "list stored models (* = active)"),
        ("verify", "re-hash every stored model; exit 1 if any is bad"),
    ):
        data_arg(msub.add_parser(name, help=text))
    a = msub.add_parser("activate", help="make NAME@VERSION the active model of its task")
    a.add_argument("ref", metavar="NAME@VERSION", help="an installed model")
    data_arg(a)
    a = msub.add_parser("rollback", help="back to the previously active model of a task")
    a.add_argument("task", choices=["detect", "embed", "liveness"], help="which model slot")
    data_arg(a)
    p.set_defaults(func=cmd_models)


def _register_face(sub: Any) -> None:
    p = sub.add_parser(
        "face",
        help="face diagnostics: detect, embed, compare",
        description="Run the face engine on image files, as the kiosks do.",
    )
    fsub = p.add_subparsers(dest="face_cmd", required=True, metavar="ACTION")
    a = fsub.add_parser("detect", help="faces in an image: boxes, scores, landmarks")
    a.add_argument("image", type=Path, help="a JPEG or PNG file")
    a.add_argument("--model", metavar="NAME@VERSION", help="a stored detector (default: active)")
    data_arg(a)
    a = fsub.add_parser("embed", help="embedding of the largest face")
    a.add_argument("image", type=Path, help="a JPEG or PNG file")
    a.add_argument("--aligned", action="store_true", help="IMAGE is already a 112x112 crop")
    a.add_argument("--model", metavar="NAME@VERSION", help="a stored embedder (default: active)")
    data_arg(a)
    a = fsub.add_parser("compare", help="is the largest face of A the same person as of B?")
    a.add_argument("a", type=Path, help="the first face image")
    a.add_argument("b", type=Path, help="the second face image")
    a.add_argument("--model", metavar="NAME@VERSION", help="a stored embedder (default: active)")
    data_arg(a)
    p.set_defaults(func=cmd_face)


def _register_gallery(sub: Any) -> None:
    p = sub.add_parser(
        "gallery",
        help="the kiosk's local gallery of enrolled readers (diagnostics, demo)",
        description="Enroll, list or remove readers in this kiosk's gallery directly. "
        "Templates are stored encrypted (AES-256-GCM). A running gate reads the gallery at "
        "start; the normal path for enrollment is the card desk through central.",
    )
    gsub = p.add_subparsers(dest="gallery_cmd", required=True, metavar="ACTION")
    a = gsub.add_parser("enroll", help="enroll a reader from one or more face photos")
    a.add_argument("patron", help="patron id")
    a.add_argument("images", type=Path, nargs="+", help="face images of one reader")
    a.add_argument(
        "--name",
        required=True,
        help="the reader's name; the gate keeps only the given name (its last word) to greet with",
    )
    a.add_argument("--barcode", help="patron barcode (default: the patron id)")
    a.add_argument("--expires", default="", help="card expiry, YYYY-MM-DD")
    a.add_argument("--model", metavar="NAME@VERSION", help="a stored embedder (default: active)")
    data_arg(a)
    data_arg(gsub.add_parser("list", help="enrolled readers"))
    a = gsub.add_parser("remove", help="erase a reader's templates and cache entry")
    a.add_argument("patron", help="the patron number")
    data_arg(a)
    p.set_defaults(func=cmd_gallery)


def register(sub: Any) -> None:
    _register_models(sub)
    _register_face(sub)
    _register_gallery(sub)
