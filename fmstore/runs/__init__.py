"""Run folders: everything a training run produced, in safetensors and JSON only (no pickle).

save.py writes one (to a temporary sibling folder, then renamed: a crash never leaves half a
run; the layout of a run folder is its docstring); manifest.py checks manifest.json's format,
keys and every file's sha256 before anything reads the run; load.py reads the arrays and rows
(no torch at import: publish and the query path stay NumPy-only); folders.py names, lists and
resolves run folders and cleans the temporary folders of killed trainings.

    from fmstore import runs
    run_dir = runs.save_run(result, dataset, config, Path("runs"))
    serving = runs.load_serving(runs.resolve_run(Path("runs"), None))
"""

from fmstore.runs.folders import (
    TMP_PREFIX,
    check_run_name,
    list_runs,
    new_run_id,
    remove_stale_temp_runs,
    resolve_run,
)
from fmstore.runs.load import (
    SERVING_ARRAYS,
    VALID_PREDICTIONS,
    RankingArtifact,
    ServingArtifact,
    has_seen,
    load_arrays,
    load_keys,
    load_model,
    load_movie_rows,
    load_ranking,
    load_serving,
    load_valid_predictions,
    ranking_gramian,
    seen_movies,
    seen_user_ids,
)
from fmstore.runs.manifest import (
    FORMAT_VERSION,
    MANIFEST,
    check_manifest,
    check_servable,
    load_manifest,
    sha256_file,
)
from fmstore.runs.save import movie_rows, save_run, versions

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST",
    "SERVING_ARRAYS",
    "TMP_PREFIX",
    "VALID_PREDICTIONS",
    "RankingArtifact",
    "ServingArtifact",
    "check_manifest",
    "check_servable",
    "check_run_name",
    "has_seen",
    "list_runs",
    "load_arrays",
    "load_keys",
    "load_manifest",
    "load_model",
    "load_movie_rows",
    "load_ranking",
    "load_serving",
    "load_valid_predictions",
    "movie_rows",
    "new_run_id",
    "ranking_gramian",
    "remove_stale_temp_runs",
    "resolve_run",
    "save_run",
    "seen_movies",
    "seen_user_ids",
    "sha256_file",
    "versions",
]
