"""``psearch index`` (build or extend a gallery) and ``psearch query`` (search it)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from psearch.core.errors import PsearchError
from psearch.core.options import (
    checkpoint_option,
    device_option,
    format_option,
    gallery_sizes_option,
    json_option,
    out_option,
    quiet_option,
)

INDEX_CHOICES = ("auto", "flat", "ivf", "ivfpq", "hnsw")


@click.command("index")
@click.option("--embeddings", "embeddings_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Embeddings directory written by `psearch embed`.")
@click.option("--manifest", "manifest_dir", type=click.Path(path_type=Path),
              help="Detect directory (or its manifest.csv); default: the one the embeddings name.")
@out_option("Gallery directory to create (or extend, with --add).")
@click.option("--index", "index_kind", type=click.Choice(INDEX_CHOICES), default="auto",
              show_default=True,
              help="flat: exact; ivf / ivfpq / hnsw: approximate; auto: flat up to 100k rows, "
                   "IVF above.")
@click.option("--nlist", type=click.IntRange(min=1), help="IVF lists (default ~4*sqrt(N)).")
@click.option("--pq-m", type=click.IntRange(min=1), help="PQ sub-vectors for ivfpq (default D/8).")
@click.option("--target-recall", type=click.FloatRange(0, 1), default=0.97, show_default=True,
              help="Recall@10 that nprobe / efSearch are tuned to reach.")
@click.option("--add", "add", is_flag=True,
              help="Append these embeddings to the existing gallery OUT.")
@click.option("--overwrite", is_flag=True, help="Replace an existing gallery OUT.")
def index_command(embeddings_dir: Path, manifest_dir: Path | None, out: Path, index_kind: str,
                  nlist: int | None, pq_m: int | None, target_recall: float, add: bool,
                  overwrite: bool) -> None:
    """Build a searchable gallery from detections and their re-ID embeddings.

    \b
    Example:
      psearch index --manifest dets/ --embeddings emb/ --out gallery/
      psearch index --embeddings emb2/ --out gallery/ --add     # append more footage

    The gallery directory holds the FAISS index, the detections' metadata and gallery.json
    (index settings, the re-ID checkpoint and its sha256). Writes are atomic: an interrupted
    build or add leaves the previous gallery as it was. --add takes only the rows the gallery
    does not hold yet (embeddings that grew are added in part); an IVF index retrains its
    coarse quantizer when the gallery outgrows it 4x or the new rows lie 1.5x farther from its
    centroids than the rows it was trained on.
    """
    from psearch.gallery.build import index_embeddings

    gallery = index_embeddings(embeddings_dir, out, manifest_dir, index=index_kind, add=add,
                               overwrite=overwrite, nlist=nlist, pq_m=pq_m,
                               target_recall=target_recall)
    if add and not gallery.changed:
        click.echo(f"{out}: nothing new in {embeddings_dir}; {describe(gallery.header)}")
        return
    click.echo(f"{out}: {describe(gallery.header)}" + (
        f" (coarse quantizer retrained: {gallery.retrained})" if gallery.retrained else ""))


def describe(header: dict) -> str:
    """One line: rows, dim, index and its tuned knob."""
    info = header["index"]
    knob = next((f", {k} {info[k]}" for k in ("nprobe", "efSearch") if k in info), "")
    recall = (f", recall@10 {info['tuned_recall_at_10']:.3f} on a self-test"
              if "tuned_recall_at_10" in info else "")
    return f"{header['rows']} rows, dim {header['dim']}, index {info['factory']}{knob}{recall}"


@click.command("query")
@click.option("--gallery", "gallery_dir", type=click.Path(path_type=Path),
              help="Gallery directory built by `psearch index` (or --weights with --in).")
@click.option("--image", type=click.Path(dir_okay=False, path_type=Path),
              help="Picture containing the person; give the person with --box.")
@click.option("--box", "boxes", multiple=True, metavar="X1,Y1,X2,Y2",
              help="The person's box in --image, in pixels; repeat for several people.")
@click.option("--crop", type=click.Path(dir_okay=False, path_type=Path),
              help="An already-cropped picture of the person (instead of --image/--box).")
@click.option("--top-k", type=click.IntRange(min=1), default=10, show_default=True)
@json_option()
@click.option("--show", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a result sheet: OUT.png (or .jpg) image or OUT.html page; with several "
                   "boxes one per box (OUT-1.png, ...).")
@device_option()
@checkpoint_option()
@click.option("--per-frame", is_flag=True,
              help="Videos: one row per matched frame instead of one per sighting.")
@click.option("--gap", type=click.FloatRange(min=0), default=None,
              help="Videos: seconds between matched frames that still make one sighting "
                   "[default: 2].")
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path),
              help="A query-guided checkpoint (qeeps): search --in footage pair by pair.")
@click.option("--in", "inputs", multiple=True, type=click.Path(path_type=Path),
              help="With --weights: images, folders or videos to search (repeatable).")
@click.option("--fps", type=click.FloatRange(min=0, min_open=True), default=None,
              help="With --in videos: frames per second to search (default: every frame).")
@click.option("--rerank", type=click.Path(dir_okay=False, path_type=Path),
              help="A query-guided checkpoint (qeeps) that re-scores the gallery's shortlist.")
@click.option("--rerank-top", type=click.IntRange(min=1), default=50, show_default=True,
              help="With --rerank: gallery pictures of the FAISS shortlist to re-score.")
@quiet_option()
def query_command(gallery_dir: Path | None, image: Path | None, boxes: tuple[str, ...],
                  crop: Path | None, top_k: int, as_json: bool, show: Path | None, device: str,
                  checkpoint: Path | None, per_frame: bool, gap: float | None,
                  weights: Path | None, inputs: tuple[Path, ...], fps: float | None,
                  rerank: Path | None, rerank_top: int, quiet: bool) -> None:
    """Find the person at --box of --image (or in --crop) in a gallery.

    \b
    Example:
      psearch query --gallery gallery/ --image q.jpg --box 120,40,180,220 --show hits.png
      psearch query --gallery gallery/ --crop person.jpg --top-k 20 --json
      psearch query --gallery gallery/ --image q.jpg --box 120,40,180,220 \\
          --rerank qeeps.pt --rerank-top 50        # QEEPS re-scores the 50 best pictures
      psearch query --weights qeeps.pt --image q.jpg --box 120,40,180,220 --in frames/

    Prints a ranked table: rank, cosine score, source image (or video:frame) and box. In a
    gallery of videos the hits of nearby frames of one video are grouped into sightings (start
    and end time H:MM:SS.mmm, best frame and score, frames matched), ranked by best score;
    --per-frame shows the frames instead. The query is embedded with the gallery's re-ID
    checkpoint (an error if its sha256 changed).
    """
    if weights is not None or rerank is not None:
        from psearch.search.pairs import query_pairs

        query_pairs(gallery_dir=gallery_dir, image=image, boxes=boxes, crop=crop, top_k=top_k,
                    as_json=as_json, show=show, device=device, checkpoint=checkpoint,
                    weights=weights, inputs=inputs, fps=fps, rerank=rerank,
                    rerank_top=rerank_top, format_table=format_table,
                    progress=not quiet)
        return
    if gallery_dir is None:
        raise PsearchError("give --gallery (or --weights QEEPS.pt with --in footage)")
    if inputs or fps is not None:
        raise PsearchError("--in and --fps apply to --weights (pair-by-pair search)")
    import numpy as np

    from psearch.core.boxes import check_box, crop_box, parse_box
    from psearch.core.media import read_image
    from psearch.gallery.sheet import write_sheet
    from psearch.search.person_search import PersonSearch

    if (image is None) == (crop is None):
        raise PsearchError("give either --image with --box, or --crop")
    if image is not None and not boxes:
        raise PsearchError("--image needs --box x1,y1,x2,y2 (or use --crop for a cropped person)")
    if crop is not None and boxes:
        raise PsearchError("--box applies to --image, not to --crop")
    picture = read_image(image if image is not None else crop)
    if crop is not None:
        query_boxes, crops = [None], [picture]
    else:
        h, w = picture.shape[:2]
        query_boxes = [check_box(parse_box(b), w, h) for b in boxes]
        crops = [crop_box(picture, b) for b in query_boxes]
    ps = PersonSearch(gallery_dir, device=device, checkpoint=checkpoint)
    # The boxes are checked once above; embed them (or the crop) and search in one batch.
    embeddings = (ps.embedder.embed_boxes(picture, np.stack(query_boxes)) if crop is None
                  else ps.embed(picture))
    grouped = ps.gallery.rows.has_video and not per_frame
    results = (ps.search_sightings(embeddings, top_k, gap) if grouped
               else ps.search(embeddings, top_k))
    key = "sightings" if grouped else "matches"
    sheets = sheet_paths(show, len(results)) if show else [None] * len(results)
    for crop_rgb, matches, sheet in zip(crops, results, sheets, strict=True):
        if sheet is not None:
            write_sheet(crop_rgb, matches, sheet)
    query_source = str(image if image is not None else crop)
    if as_json:
        click.echo(json.dumps({"gallery": str(gallery_dir), "queries": [
            {"image": query_source, "box": None if b is None else [float(v) for v in b],
             "sheet": None if s is None else str(s), key: [m.to_dict() for m in ms]}
            for b, ms, s in zip(query_boxes, results, sheets, strict=True)]}, indent=2))
        return
    for b, matches, sheet in zip(query_boxes, results, sheets, strict=True):
        where = "crop" if b is None else "box " + ",".join(f"{v:g}" for v in b)
        click.echo(f"query {query_source} {where}: top {len(matches)} {key} of "
                   f"{len(ps.gallery)} detections")
        click.echo(format_sightings(matches) if grouped else format_table(matches))
        if sheet is not None:
            click.echo(f"sheet: {sheet}")


def sheet_paths(show: Path, n: int) -> list[Path]:
    """``show`` itself for one query, else ``stem-1.suffix``, ``stem-2.suffix``, ..."""
    if n == 1:
        return [show]
    return [show.with_name(f"{show.stem}-{i + 1}{show.suffix}") for i in range(n)]


def format_table(matches: list) -> str:
    """The ranked results as aligned text columns."""
    lines = [f"{'rank':>4}  {'score':>6}  {'box':<23}  source"]
    for m in matches:
        box = ",".join(f"{v:.0f}" for v in m.box)
        lines.append(f"{m.rank:>4}  {m.score:6.3f}  {box:<23}  {m.where}")
    return "\n".join(lines)


def format_sightings(sightings: list) -> str:
    """Ranked sightings as aligned text columns: times, frames matched, best frame."""
    lines = [f"{'rank':>4}  {'score':>6}  {'start':>11}  {'end':>11}  {'frames':>6}  "
             f"{'best box':<19}  source:best frame"]
    for s in sightings:
        box = ",".join(f"{v:.0f}" for v in s.best.box)
        start, end = s.bounds()
        lines.append(f"{s.rank:>4}  {s.score:6.3f}  {start:>11}  {end:>11}  {s.frames:>6}  "
                     f"{box:<19}  {s.best.where}")
    return "\n".join(lines)


@click.command("evaluate-gallery")
@click.option("--gallery", "gallery_dir", required=True, type=click.Path(path_type=Path),
              help="Gallery built (`psearch index`) from the dataset's test images.")
@click.option("--data", "data_root", required=True, type=click.Path(path_type=Path),
              help="Dataset root folder (CUHK-SYSU, PRW or folder format).")
@format_option()
@gallery_sizes_option("CUHK-SYSU gallery sizes to report, e.g. 50,100.  [default: 50 and 100]")
@click.option("--full-set", is_flag=True, help="CUHK-SYSU: also report the full-set gallery.")
@out_option("Also write the metrics (fractions) to this JSON file.", name="json_path",
            required=False, file=True, aliases=("--json",))
@click.option("--save-results", type=click.Path(dir_okay=False, path_type=Path),
              help="Also save the detections, features and query features as a results .npz "
                   "(for `psearch evaluate --results`).")
@device_option()
@checkpoint_option()
@quiet_option()
def evaluate_gallery_command(gallery_dir: Path, data_root: Path, fmt: str,
                             gallery_sizes: tuple[int, ...] | None, full_set: bool,
                             json_path: Path | None, save_results: Path | None, device: str,
                             checkpoint: Path | None, quiet: bool) -> None:
    """Score a gallery with the dataset's standard search and detection protocols.

    Gallery rows are matched to the dataset's test images by source file name; the queries are
    embedded with the gallery's re-ID checkpoint; the metrics are those of `psearch evaluate`.

    \b
    Example:
      psearch evaluate-gallery --gallery gallery/ --data CUHK-SYSU/ --out eval.json
    """
    from psearch.data import load_dataset
    from psearch.evaluation import evaluate, format_report, write_report_json
    from psearch.evaluation import save_results as save_npz
    from psearch.search.evaluate import gallery_results
    from psearch.search.person_search import PersonSearch

    dataset = load_dataset(data_root, fmt)
    ps = PersonSearch(gallery_dir, device=device, checkpoint=checkpoint)
    results, foreign = gallery_results(ps.gallery, dataset, ps.embedder, progress=not quiet)
    if foreign:
        click.echo(f"warning: {foreign} gallery rows are not test images of {data_root} "
                   "and are left out", err=True)
    report = evaluate(dataset, results, gallery_sizes=gallery_sizes, full_set=full_set,
                      progress=not quiet)
    click.echo(format_report(report))
    if save_results is not None:
        save_npz(save_results, results)
        click.echo(f"wrote {save_results}")
    if json_path is not None:
        write_report_json(json_path, report)
        click.echo(f"wrote {json_path}")


COMMANDS: list[click.Command] = [index_command, query_command, evaluate_gallery_command]
