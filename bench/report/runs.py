"""Several run directories as one store, so one report compares them (``bench report RUN_A RUN_B ...``).

Why cells are matched by configuration, not by directory: two runs of the same grid hold the same
cells under the same names; a cell whose configuration hash and dataset content are the same in two
runs is one cell (taken once, from the first run that finished it, and said so). Records that share a
name but not a configuration are kept apart: their table label gets the run's name. A dataset id whose
content (test images and labels, ``dataset_fingerprint``) differs between runs gets the run's name too,
so paired comparisons only ever pair cells scored on identical test sets.
"""

from __future__ import annotations

from pathlib import Path

from bench.run.store import ResultStore

FINISHED = ("ok", "degenerate")


class CombinedStore:
    """The read side of :class:`ResultStore` (``records``, ``skipped``, ``arrays``) over several runs."""

    def __init__(self, run_dirs):
        self.stores = [ResultStore(Path(d).resolve()) for d in run_dirs]
        self.run_dir = self.stores[0].run_dir
        self.run_dirs = [s.run_dir for s in self.stores]
        self.skipped: list = []
        self.notes: list[str] = []
        self._where: dict[str, tuple[ResultStore, str]] = {}

    def set_aside_counts(self) -> dict[Path, int]:
        """Records kept aside in any of the runs, per folder (:meth:`ResultStore.set_aside_counts`)."""
        return {folder: n for store in self.stores for folder, n in store.set_aside_counts().items()}

    def records(self, *, skip_bad: bool = False) -> list[dict]:
        self.skipped, self._where = [], {}
        kept: dict[tuple, dict] = {}                 # (config hash, dataset content) -> record
        duplicates: list[str] = []
        data_of: dict[str, str] = {}                 # dataset id -> content hash of the first run holding it
        label_of: dict[tuple, str] = {}              # (dataset, method, seed) -> config hash
        renamed_data, renamed_label = set(), set()
        for store in self.stores:
            records = store.records(skip_bad=skip_bad)
            self.skipped += list(store.skipped)
            run = store.run_dir.name
            for rec in records:
                key = (rec.get("config_hash"), rec.get("dataset_fingerprint"))
                old = kept.get(key)
                if old is not None and (old.get("status") in FINISHED or rec.get("status") not in FINISHED):
                    duplicates.append(f"{rec.get('cell_id')} ({old['run_dir_name']} and {run})")
                    continue
                rec = {**rec, "run_dir_name": run, "run_dir": str(store.run_dir), "source_cell_id": rec.get("cell_id")}
                dataset = rec.get("dataset")
                fingerprint = data_of.setdefault(dataset, rec.get("dataset_fingerprint"))
                if rec.get("dataset_fingerprint") != fingerprint:
                    rec["dataset"] = f"{dataset} ({run})"
                    renamed_data.add(f"{dataset} in {run}")
                label = (rec["dataset"], rec.get("method"), rec.get("seed"))
                if label_of.setdefault(label, rec.get("config_hash")) != rec.get("config_hash"):
                    rec["method"] = f"{rec.get('method')} ({run})"
                    renamed_label.add(rec["method"])
                cell_id = rec["cell_id"]
                if cell_id in self._where and (old is None or old["cell_id"] != cell_id):
                    cell_id = rec["cell_id"] = f"{cell_id}@{run}"
                self._where[cell_id] = (store, rec["source_cell_id"])
                kept[key] = rec
        names = ", ".join(str(d) for d in self.run_dirs)
        self.notes = [f"{len(self.stores)} run directories: {names}"]
        if duplicates:
            self.notes.append(f"{len(duplicates)} cell(s) present in more than one run with the same configuration "
                              f"and data, taken once (from the first run): {', '.join(duplicates[:4])}"
                              + (", ..." if len(duplicates) > 4 else ""))
        if renamed_data:
            self.notes.append("datasets whose images or labels differ from the first run's under the same id, kept "
                              f"apart (never paired): {', '.join(sorted(renamed_data))}")
        if renamed_label:
            self.notes.append("methods with one label but different configurations in different runs, labelled by "
                              f"run: {', '.join(sorted(renamed_label)[:6])}")
        return list(kept.values())

    def arrays(self, cell_id: str, *, lazy: bool = False):
        store, source = self._where[cell_id]
        return store.arrays(source, lazy=lazy)

    def arrays_path(self, cell_id: str) -> Path:
        store, source = self._where[cell_id]
        return store.arrays_path(source)
