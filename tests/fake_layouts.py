"""Tiny fake datasets in every published layout the readers accept (anomalib-style generator).

Why: the real MedIAnomaly, BMAD, LGG, BraTS and MVTec data cannot ship with the tests, but the
readers must be exercised on the exact folder and file-name conventions. Every image is
``size x size`` (32 by default): a mid-grey disc ("organ") with seeded noise on a background of
small *positive* noise (as real scans: the air around a head is never exactly zero, so a reader
that takes "non-zero" for "body" fails here); anomalous images add a bright square at
:attr:`FakeLayouts.lesion` and their mask marks exactly that square, so a test can check that a
mask lands at the known place after resizing.

Each ``write_*`` method returns the folder it wrote and the counts a reader should find.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass
class Written:
    """Where a fake tree was written and what a reader should find in it."""

    path: Path
    counts: dict = field(default_factory=dict)   # e.g. {"train": 6, "test_normal": 4, "test_abnormal": 4}
    groups: dict = field(default_factory=dict)   # split -> sorted group ids, where the layout fixes them


class FakeLayouts:
    """Writes fake trees under ``root``; deterministic for a given ``seed``."""

    def __init__(self, root: Path, seed: int = 0, size: int = 32):
        self.root = Path(root)
        self.size = size
        self.rng = np.random.default_rng(seed)
        s = size
        #: rows, cols of the lesion square (the mask's known place)
        self.lesion = (slice(s // 8, 3 * s // 8), slice(7 * s // 16, 11 * s // 16))

    # -- pixels ------------------------------------------------------------------------------
    def pixels(self, anomalous: bool, channels: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(image uint8 [H, W] or [H, W, 3], mask uint8 {0, 255} [H, W])."""
        s = self.size
        yy, xx = np.mgrid[:s, :s]
        disc = (yy - s / 2) ** 2 + (xx - s / 2) ** 2 < (0.45 * s) ** 2
        img = np.where(disc, 90.0 + self.rng.normal(0, 6, (s, s)), self.background_noise((s, s)))
        mask = np.zeros((s, s), np.uint8)
        if anomalous:
            img[self.lesion] = 240.0
            mask[self.lesion] = 255
        img = np.clip(img, 0, 255).astype(np.uint8)
        if channels == 3:
            img = np.stack([img, (img * 0.8).astype(np.uint8), (img * 0.6).astype(np.uint8)], -1)
        return img, mask

    def background_noise(self, shape: tuple[int, ...], scale: float = 2.0) -> np.ndarray:
        """Small positive scanner-like noise (magnitude of a Gaussian): what real air looks like."""
        return np.abs(self.rng.normal(0, scale, shape))

    def blank_slice(self, channels: int = 1) -> np.ndarray:
        """A slice above or below the head: background noise only, uint8 ``[H, W]`` or ``[H, W, 3]``."""
        img = np.clip(np.round(self.background_noise((self.size, self.size))), 0, 255).astype(np.uint8)
        return np.stack([img] * 3, -1) if channels == 3 else img

    @staticmethod
    def save(path: Path, array: np.ndarray) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(path)
        return path

    def _pair(self, image_path: Path, mask_path: Path | None, anomalous: bool, channels: int = 1) -> None:
        img, mask = self.pixels(anomalous, channels)
        self.save(image_path, img)
        if mask_path is not None:
            self.save(mask_path, mask)

    # -- MedIAnomaly ---------------------------------------------------------------------------
    def write_medianomaly(self, member: str, n_train: int = 6, n_normal: int = 4, n_abnormal: int = 4,
                          n_unlabeled: int = 2) -> Written:
        writer = {"rsna": self._medianomaly_json, "vincxr": self._medianomaly_json,
                  "braintumor": self._medianomaly_json, "lag": self._medianomaly_json,
                  "isic2018": self._medianomaly_isic, "camelyon16": self._medianomaly_camelyon,
                  "brats2021": self._medianomaly_brats}[member]
        return writer(member, n_train, n_normal, n_abnormal, n_unlabeled)

    def _medianomaly_json(self, member, n_train, n_normal, n_abnormal, n_unlabeled) -> Written:
        folder = self.root / {"rsna": "RSNA", "vincxr": "VinCXR", "braintumor": "BrainTumor", "lag": "LAG"}[member]
        channels = 3 if member == "lag" else 1
        lists: dict = {"train": {"0": [], "unlabeled": {"0": [], "1": []}}, "test": {"0": [], "1": []}}
        plan = ([("tr", lists["train"]["0"], False)] * n_train + [("tn", lists["test"]["0"], False)] * n_normal
                + [("ta", lists["test"]["1"], True)] * n_abnormal
                + [("un", lists["train"]["unlabeled"]["0"], False)] * n_unlabeled
                + [("ua", lists["train"]["unlabeled"]["1"], True)] * n_unlabeled)
        for i, (prefix, target, anomalous) in enumerate(plan):
            name = f"{prefix}_{i:04d}.png"
            self._pair(folder / "images" / name, None, anomalous, channels)
            target.append(name)
        (folder / "data.json").write_text(json.dumps(lists))
        return Written(folder, {"train": n_train, "test_normal": n_normal, "test_abnormal": n_abnormal,
                                "pool": 2 * n_unlabeled})

    def write_isic_validation(self, n_normal: int = 2, n_abnormal: int = 2) -> Written:
        """Add the official Task-3 validation folders (the reader then uses them as ``val``)."""
        return self._isic_part(self.root / "ISIC2018_Task3", "Validation", n_normal, n_abnormal, 34000, [])

    def _isic_part(self, folder: Path, part: str, n_nv: int, n_other: int, index: int, lesions: list) -> Written:
        classes = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
        rows = []
        for j in range(n_nv + n_other):
            image_id = f"ISIC_{index + j:07d}"
            anomalous = j >= n_nv
            cls = "MEL" if anomalous else "NV"
            self._pair(folder / f"ISIC2018_Task3_{part}_Input" / f"{image_id}.jpg", None, anomalous, 3)
            rows.append([image_id] + [f"{float(c == cls):.1f}" for c in classes])
            if part == "Training":
                lesions.append([image_id, f"HAM_{j // 2:07d}", "histo"])  # two images per lesion
        gt = folder / f"ISIC2018_Task3_{part}_GroundTruth"
        gt.mkdir(parents=True, exist_ok=True)
        with (gt / f"ISIC2018_Task3_{part}_GroundTruth.csv").open("w", newline="") as fh:
            csv.writer(fh).writerows([["image"] + classes] + rows)
        (folder / f"ISIC2018_Task3_{part}_Input" / "LICENSE.txt").write_text("fake")
        return Written(folder, {"normal": n_nv, "abnormal": n_other})

    def _medianomaly_isic(self, member, n_train, n_normal, n_abnormal, n_unlabeled) -> Written:
        folder = self.root / "ISIC2018_Task3"
        lesions: list = []
        self._isic_part(folder, "Training", n_train, 3, 24306, lesions)
        self._isic_part(folder, "Test", n_normal, n_abnormal, 30000, lesions)
        with (folder / "ISIC2018_Task3_Training_GroundTruth" / "ISIC2018_Task3_Training_LesionGroupings.csv"
              ).open("w", newline="") as fh:
            csv.writer(fh).writerows([["image", "lesion_id", "diagnosis_confirm_type"]] + lesions)
        return Written(folder, {"train": n_train, "test_normal": n_normal, "test_abnormal": n_abnormal})

    def _medianomaly_camelyon(self, member, n_train, n_normal, n_abnormal, n_unlabeled) -> Written:
        folder = self.root / "Camelyon16"
        for split, cls, n, anomalous in (("train", "good", n_train, False), ("test", "good", n_normal, False),
                                         ("test", "Ungood", n_abnormal, True)):
            for i in range(n):  # names repeat across folders on purpose, as in the release
                self._pair(folder / split / cls / f"{1000 + i}.png", None, anomalous, 3)
        return Written(folder, {"train": n_train, "test_normal": n_normal, "test_abnormal": n_abnormal})

    def _medianomaly_brats(self, member, n_train, n_normal, n_abnormal, n_unlabeled) -> Written:
        folder = self.root / "BraTS2021"
        for i in range(n_train):
            self._pair(folder / "train" / f"BraTS2021_{i // 2:05d}_flair_{60 + i}.png", None, False)
        test_volumes = [f"BraTS2021_{100 + v:05d}" for v in range(4)]
        for i in range(n_normal):
            self._pair(folder / "test" / "normal" / f"{test_volumes[i % 4]}_flair_{60 + i}.png", None, False)
        for i in range(n_abnormal):
            name = f"{test_volumes[i % 4]}_flair_{80 + i}.png"
            self._pair(folder / "test" / "tumor" / name,
                       folder / "test" / "annotation" / name.replace("flair", "seg"), True)
        return Written(folder, {"train": n_train, "test_normal": n_normal, "test_abnormal": n_abnormal},
                       {"train": sorted({f"BraTS2021_{i // 2:05d}" for i in range(n_train)})})

    # -- BMAD -----------------------------------------------------------------------------------
    BMAD_FOLDERS = {"brats": "Brain", "liver": "Liver", "resc": "Retina_RESC", "oct2017": "Retina_OCT2017",
                    "rsna": "Chest", "camelyon16": "Histopathology"}

    def write_bmad(self, member: str, n_train: int = 6, n_normal: int = 3, n_abnormal: int = 3,
                   mask_folder: str = "label") -> Written:
        folder = self.root / self.BMAD_FOLDERS[member]
        masked = member in ("brats", "liver", "resc")
        channels = 3 if member == "camelyon16" else 1

        def name(split: str, i: int, anomalous: bool) -> str:
            if member == "brats":   # <patient>_<slice>.png; patients never cross splits
                base = {"train": 0, "valid": 100, "test": 200}[split] + (50 if anomalous else 0)
                return f"{base + i // 2:05d}_{60 + i}.png"
            if member == "liver":   # BTCV volumes for train, LiTS volumes for valid/test
                if split == "train":
                    return f"img_{i // 3 + 1:04d}_{i}_hist.png"
                base = {"valid": 10, "test": 20}[split] + (5 if anomalous else 0)
                return f"liver_{base + i // 2}_{i}.png"
            return f"{i:03d}.png"

        counts = {}
        for split, n_good, n_bad in (("train", n_train, 0), ("valid", n_normal, n_abnormal),
                                     ("test", n_normal, n_abnormal)):
            for cls, n, anomalous in (("good", n_good, False), ("Ungood", n_bad, True)):
                if n == 0:
                    continue
                for i in range(n):
                    file = name(split, i, anomalous)
                    if masked:
                        base = folder / split / cls
                        with_mask = split != "train"
                        self._pair(base / "img" / file, base / mask_folder / file if with_mask else None, anomalous)
                    else:
                        self._pair(folder / split / cls / file, None, anomalous, channels)
                counts[f"{split}_{cls}"] = n
        return Written(folder, counts)

    # -- LGG kaggle_3m --------------------------------------------------------------------------
    def write_lgg(self, n_patients: int = 10, n_slices: int = 6) -> Written:
        folder = self.root / "kaggle_3m"
        tumour_slices = {2, 3}
        for p in range(n_patients):
            patient = f"TCGA_FK_{1000 + p}_1996{p % 12 + 1:02d}01"
            for k in range(1, n_slices + 1):
                anomalous = k in tumour_slices and p % 3 != 2   # every third patient tumour-free
                img, mask = self.pixels(anomalous, channels=1)
                rgb = np.stack([img // 3, img, img // 2], -1)   # FLAIR (channel 1) carries the lesion
                self.save(folder / patient / f"{patient}_{k}.tif", rgb.astype(np.uint8))
                self.save(folder / patient / f"{patient}_{k}_mask.tif", mask)
        (folder / "data.csv").write_text("Patient,RNASeqCluster\n")
        n_abn = sum(1 for p in range(n_patients) if p % 3 != 2) * len(tumour_slices)
        return Written(folder, {"patients": n_patients, "slices": n_patients * n_slices, "abnormal": n_abn})

    # -- NIfTI (BraTS-style) --------------------------------------------------------------------
    def write_nifti(self, n_cases: int = 6, depth: int = 12, modality: str = "flair") -> Written:
        import nibabel as nib

        folder = self.root / "brats_nifti"
        s = self.size
        yy, xx = np.mgrid[:s, :s]
        disc = (yy - s / 2) ** 2 + (xx - s / 2) ** 2 < (0.4 * s) ** 2
        kept = 0
        abnormal = 0
        for c in range(n_cases):
            case = f"BraTS2021_{c:05d}"
            vol = self.background_noise((s, s, depth), scale=4.0).astype(np.float32)   # noisy air everywhere
            seg = np.zeros((s, s, depth), np.uint8)
            for z in range(2, depth - 2):            # first and last two slices hold no brain
                vol[..., z][disc] = 300.0 + 10 * c + self.rng.normal(0, 5, int(disc.sum()))
                kept += 1
            if c % 3 != 2:                           # every third case is tumour-free
                for z in (4, 5, 6):
                    vol[self.lesion[0], self.lesion[1], z] = 900.0
                    seg[self.lesion[0], self.lesion[1], z] = 2
                    abnormal += 1
            affine = np.eye(4)
            (folder / case).mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(vol, affine), folder / case / f"{case}_{modality}.nii.gz")
            nib.save(nib.Nifti1Image(seg, affine), folder / case / f"{case}_seg.nii.gz")
        return Written(folder, {"cases": n_cases, "slices": kept, "abnormal": abnormal})

    # -- BUSI (Dataset_BUSI_with_GT) ------------------------------------------------------------
    #: (height, width) of the fake ultrasound images: they vary, as BUSI's do, and are multiples of 16
    #: so a lesion's mask lands on whole pixels at 16 px (see :meth:`busi_lesions`).
    BUSI_SHAPES = ((48, 64), (64, 48), (32, 80))

    @staticmethod
    def busi_lesions(h: int, w: int) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
        """The first and the second lesion (``_mask.png``, ``_mask_1.png``) of an ``h x w`` image."""
        return ((slice(h // 4, h // 2), slice(w // 4, w // 2)),
                (slice(5 * h // 8, 3 * h // 4), slice(5 * w // 8, 7 * w // 8)))

    def write_busi(self, n_normal: int = 4, n_benign: int = 4, n_malignant: int = 3,
                   second_lesion: tuple[str, ...] = ("benign (2)", "malignant (1)"), duplicate: bool = True,
                   inside: bool = True) -> Written:
        """``Dataset_BUSI_with_GT/{normal,benign,malignant}/<class> (k).png`` and ``_mask.png``.

        Images are RGB-saved grayscale speckle with dark (hypoechoic) lesions; masks are 0/255.
        Normal images get an empty mask, as in the release; the images named in ``second_lesion``
        also get ``_mask_1.png``; with ``duplicate`` the last malignant image is a byte copy of
        ``benign (1)`` (as benign 433 = malignant 145). ``inside=False`` writes the class folders
        directly under the root (``root`` is then the BUSI folder itself).
        """
        folder = self.root / "Dataset_BUSI_with_GT" if inside else self.root
        counts = {"normal": n_normal, "benign": n_benign, "malignant": n_malignant}
        for subtype, n in counts.items():
            for k in range(1, n + 1):
                stem = f"{subtype} ({k})"
                base = folder / subtype / stem
                if duplicate and subtype == "malignant" and k == n:
                    base.parent.mkdir(parents=True, exist_ok=True)
                    for suffix in (".png", "_mask.png"):
                        data = (folder / "benign" / f"benign (1){suffix}").read_bytes()
                        Path(f"{base}{suffix}").write_bytes(data)
                    continue
                h, w = self.BUSI_SHAPES[(k - 1) % len(self.BUSI_SHAPES)]
                gray = 70.0 + self.rng.normal(0, 12, (h, w))
                lesions = self.busi_lesions(h, w)[: (subtype != "normal") + (stem in second_lesion)]
                for n_mask, (rows, cols) in enumerate(lesions):
                    gray[rows, cols] = 15.0 + self.rng.normal(0, 3, gray[rows, cols].shape)
                    mask = np.zeros((h, w), np.uint8)
                    mask[rows, cols] = 255
                    self.save(Path(f"{base}_mask{'' if n_mask == 0 else f'_{n_mask}'}.png"), mask)
                if not lesions:
                    self.save(Path(f"{base}_mask.png"), np.zeros((h, w), np.uint8))
                gray = np.clip(gray, 0, 255).astype(np.uint8)
                self.save(Path(f"{base}.png"), np.stack([gray] * 3, -1))
        counts.update(images=sum(counts.values()), duplicates=int(duplicate))
        return Written(folder, counts)

    # -- MVTec AD -------------------------------------------------------------------------------
    def write_mvtec(self, category: str = "bottle", n_train: int = 6, n_good: int = 4, defects: tuple = ("broken",
                    "crack"), n_defect: int = 3) -> Written:
        folder = self.root / category
        for i in range(n_train):
            self._pair(folder / "train" / "good" / f"{i:03d}.png", None, False, 3)
        for i in range(n_good):
            self._pair(folder / "test" / "good" / f"{i:03d}.png", None, False, 3)
        for defect in defects:
            for i in range(n_defect):
                self._pair(folder / "test" / defect / f"{i:03d}.png",
                           folder / "ground_truth" / defect / f"{i:03d}_mask.png", True, 3)
        return Written(folder, {"train": n_train, "test_normal": n_good, "test_abnormal": n_defect * len(defects)})

    # -- generic folders ------------------------------------------------------------------------
    def write_folders(self, n_patients: int = 8, per_patient: int = 2, with_masks: bool = True) -> Written:
        folder = self.root / "my_dataset"
        n_abn = 0
        for p in range(n_patients):
            for k in range(per_patient):
                anomalous = p % 2 == 1 and k == 0
                name = f"p{p:02d}_{k}.png"
                cls = "abnormal" if anomalous else "normal"
                mask = folder / "masks" / name if (with_masks and anomalous) else None
                self._pair(folder / cls / name, mask, anomalous)
                n_abn += anomalous
        return Written(folder, {"images": n_patients * per_patient, "abnormal": n_abn, "patients": n_patients})

    def write_study(self, n_patients: int = 10) -> Written:
        """anomalib-``Folder``-style names of one's own: ``good/`` (two normals per patient), ``good_test/``
        (one held-out normal per even patient), ``lesion/`` + ``lesion_masks/`` (one per odd patient),
        files named ``<patient>-<k>.png`` (patient only in ``groups.csv``), a ``.jpg`` copy in ``good/``
        (filtered by ``extensions``), a ``notes.txt`` in the way, and ``split.csv`` by patient (the held-out
        and lesion images of training patients unlisted)."""
        folder = self.root / "study"
        rows, groups = [], []
        for p in range(n_patients):
            patient = f"pt{p:02d}"
            split = "train" if p < n_patients // 2 else ("val" if p < 3 * n_patients // 4 else "test")
            for k in range(2):
                self._pair(folder / "good" / f"{patient}-{k}.png", None, False)
                rows.append((f"good/{patient}-{k}.png", split))
                groups.append((f"good/{patient}-{k}.png", patient))
            if p % 2 == 0:
                self._pair(folder / "good_test" / f"{patient}-t.png", None, False)
                rows += [(f"good_test/{patient}-t.png", split)] if split != "train" else []
                groups.append((f"good_test/{patient}-t.png", patient))
            else:
                self._pair(folder / "lesion" / f"{patient}-a.png", folder / "lesion_masks" / f"{patient}-a.png", True)
                rows += [(f"lesion/{patient}-a.png", split)] if split != "train" else []
                groups.append((f"lesion/{patient}-a.png", patient))
        img, _ = self.pixels(False)
        Image.fromarray(img).save(folder / "good" / "pt00-0.jpg")
        (folder / "good" / "notes.txt").write_text("not an image")
        with (folder / "split.csv").open("w", newline="") as handle:
            csv.writer(handle).writerows([("file", "split"), *rows])
        with (folder / "groups.csv").open("w", newline="") as handle:
            csv.writer(handle).writerows([("file", "group"), *groups])
        return Written(folder, {"normal": 2 * n_patients, "normal_test": (n_patients + 1) // 2,
                                "abnormal": n_patients // 2, "patients": n_patients})
