"""Data: import a data set (server folder, .zip, .npz), then look at it: class balance, samples, sizes,
intensities, and a preview of the training augmentation."""


import numpy as np
import pandas as pd
import streamlit as st

import app_components as ui
from cxr import charts, datasets
from cxr.config import (
    BRIGHTNESS_RANGE,
    CLASS_NAMES,
    CONTRAST_RANGE,
    IMAGE_SIZE_RANGE,
    PHOTOMETRIC_RANGE,
    PRESETS,
    RANDOM_CROP_RANGE,
    ROTATION_RANGE,
    SHIFT_RANGE,
    ZOOM_RANGE,
    DataConfig,
    TrainingConfig,
)
from cxr.dataset_records import ImportReport

SAMPLES_PER_CLASS = 6
INTENSITY_SAMPLE = 300  # images per class for the intensity histogram: enough for a smooth curve, fast
AUGMENTATIONS_SHOWN = 6
GALLERY_WIDTH = 140  # px per image: six in a row fit a 1280 px window with the menu open
DATA_TABS = ("Class balance", "Sample images", "Sizes and intensities", "Augmentation preview", "Import report")


def import_section() -> None:
    st.subheader("Bring a data set")
    folder_tab, zip_tab, npz_tab = st.tabs(["Folder on the server", "Upload a .zip", "Upload a MedMNIST .npz"])
    with folder_tab:
        folder = st.text_input("Folder path on the server", placeholder="/data/chest_xray",
                               help="A folder with train/ and test/ (optionally val/) sub-folders, each holding "
                                    "normal/ and pneumonia/ (any case), or only normal/ and pneumonia/.")
    with zip_tab:
        zip_file = st.file_uploader("A .zip of a data folder", type=["zip"], key="data_zip_upload")
    with npz_tab:
        npz_file = st.file_uploader("A MedMNIST-style .npz (train_images, train_labels, test_images, test_labels)",
                                    type=["npz"], key="data_npz_upload")
    name_column, size_column = st.columns(2)
    name = name_column.text_input("Name (optional)", help="Letters, digits, '.', '_' or '-'. Empty: made from the "
                                                          "source's name and the image size.")
    image_size = size_column.number_input("Image size (pixels, square)", min_value=IMAGE_SIZE_RANGE[0],
                                          max_value=IMAGE_SIZE_RANGE[1], value=DataConfig().image_size, step=2,
                                          help="Images are stored at this size; a model trains at the size of "
                                               "its data set. 150 px is the tutorial's.")
    if not st.button("Import", type="primary", icon=":material/upload:"):
        return
    sources = [source for source in (folder.strip(), zip_file, npz_file) if source]
    if not sources:
        st.error("Nothing to import: type a folder path on the server, or upload a .zip or an .npz file.")
        return
    if len(sources) > 1:
        st.error("Several sources given: keep only one of the folder path, the .zip and the .npz, then import.")
        return
    source = sources[0]
    bar = st.progress(0.0, text="Reading images…")

    def progress(done: int, total: int) -> None:
        bar.progress(done / max(total, 1), text=f"Read {done:,} of {total:,} images")

    report = None
    with ui.guarded("Importing the data set"):
        config = DataConfig(image_size=int(image_size))
        if isinstance(source, str):
            report = datasets.import_dataset(datasets.check_server_folder(source), name=name.strip() or None,
                                             config=config, progress=progress)
        else:
            report = datasets.read_upload(source.getvalue(), source.name, config=config, name=name.strip() or None,
                                          progress=progress)
    bar.empty()
    if report is not None:
        st.session_state[ui.KEY_IMPORT_REPORT] = report
        st.session_state[ui.KEY_DATASET] = report.name
        st.success(f"Imported data set **{report.name}**.")


def show_report(report: ImportReport) -> None:
    """The import report: files read and kept, skipped files with the reason, duplicates, overlaps."""
    skipped, duplicate_groups = report.skipped, report.duplicate_groups
    columns = st.columns(4)
    columns[0].metric("Files found", f"{report.num_files:,}")
    columns[1].metric("Images kept", f"{report.num_images:,}")
    columns[2].metric("Skipped (unreadable)", f"{len(skipped):,}")
    columns[3].metric("Duplicate groups", f"{len(duplicate_groups):,}",
                      help=f"{len(report.duplicates_removed):,} extra copies removed")
    st.caption(f"Source: {report.source} ({report.layout} layout), {report.image_size} px"
               + (" — loaded from the cache" if report.from_cache else f" — {report.seconds:.1f} s"))
    if skipped:
        st.markdown("**Skipped files and why**")
        st.dataframe(pd.DataFrame(skipped), hide_index=True, height=min(400, 38 + 35 * len(skipped)))
    if duplicate_groups:
        with st.expander(f"{len(duplicate_groups)} group(s) of byte-identical files"):
            st.dataframe(pd.DataFrame({"files": [", ".join(group) for group in duplicate_groups]}), hide_index=True)
    overlap = report.overlap_removed
    if overlap:
        st.info(f"{len(overlap):,} training image(s) removed because their patient also appears in the test split.")
    ignored = report.ignored
    if ignored:
        with st.expander(f"{len(ignored)} entry(ies) ignored (not part of the data set)"):
            st.write(", ".join(ignored[:200]))


def sample_gallery(dataset) -> None:
    split = st.selectbox("Split", dataset.splits, key="data_gallery_split")
    images, labels = dataset.images(split), dataset.labels(split)
    generator = np.random.default_rng(st.session_state.get("data_gallery_seed", 0))
    if st.button("Other samples", icon=":material/shuffle:"):
        st.session_state["data_gallery_seed"] = int(generator.integers(1 << 30))
        generator = np.random.default_rng(st.session_state["data_gallery_seed"])
    for label, class_name in enumerate(CLASS_NAMES):
        indices = np.flatnonzero(labels == label)
        st.markdown(f"**{class_name}** ({len(indices):,} images in {split})")
        if len(indices) == 0:
            st.caption("none")
            continue
        chosen = generator.choice(indices, size=min(SAMPLES_PER_CLASS, len(indices)), replace=False)
        files = dataset.manifest[dataset.manifest["split"] == split]["file"].tolist()
        captions = [breakable(files[i].rsplit("/", 1)[-1]) if i < len(files) else f"image {i + 1}" for i in chosen]
        st.image([images[i] for i in chosen], caption=captions, width=GALLERY_WIDTH)


def breakable(name: str) -> str:
    """A file name that wraps between its parts ("person1_virus_6.jpeg" after "_", "-" and "."), not in the
    middle of a word, under a gallery image: a zero-width space after each separator."""
    for separator in ("_", "-", "."):
        name = name.replace(separator, separator + "\u200b")
    return name


def distributions(dataset) -> None:
    manifest = dataset.manifest
    sized = None
    if {"width", "height"} <= set(manifest.columns):
        sized = manifest[(manifest["width"] > 0) & (manifest["height"] > 0)]
    if sized is not None and len(sized):
        st.altair_chart(charts.image_size_chart(sized), width="stretch")
        st.caption(f"Original sizes: width {int(sized['width'].min())}–{int(sized['width'].max())} px, height "
                   f"{int(sized['height'].min())}–{int(sized['height'].max())} px; every image is stored at "
                   f"{dataset.image_size} px.")
    else:
        st.caption("Original sizes are not known for this data set (an .npz stores only the resized images).")
    split = "train" if "train" in dataset.splits else dataset.splits[0]
    images, labels = dataset.images(split), dataset.labels(split)
    generator = np.random.default_rng(0)
    chosen = np.concatenate([generator.choice(np.flatnonzero(labels == label),
                                              size=min(INTENSITY_SAMPLE, int((labels == label).sum())), replace=False)
                             for label in (0, 1) if (labels == label).any()])
    frame = charts.intensity_frame(images[chosen], labels[chosen])
    st.altair_chart(charts.intensity_chart(frame), width="stretch")
    st.caption(f"Intensities of up to {INTENSITY_SAMPLE} {split} images per class.")


def training_settings() -> TrainingConfig:
    """The session's one ``TrainingConfig`` (the Train page keeps it up to date), else the fast preset."""
    config = st.session_state.get(ui.KEY_TRAINING_CONFIG)
    return config if isinstance(config, TrainingConfig) else PRESETS["fast"]


def image_choices(dataset, split: str) -> list[str]:
    """Readable names of the images of ``split``, in the order of ``dataset.images(split)``: the file name and
    the class ("IM-0115-0001.jpeg (normal)")."""
    rows = dataset.manifest[dataset.manifest["split"] == split]
    labels = dataset.labels(split)
    files = rows["file"].astype(str).tolist() if len(rows) == len(labels) else [f"image {i + 1}" for i in
                                                                              range(len(labels))]
    return [f"{file.rsplit('/', 1)[-1]} ({CLASS_NAMES[int(label)]})" for file, label in zip(files, labels, strict=True)]


def augmentation_preview(dataset) -> None:
    defaults = training_settings()
    st.caption("Starts from the Train page's augmentation settings. Try other strengths here, then keep them for "
               "training with the button below.")
    # Three rows as the Train page groups them: shape, position, intensity.
    columns = st.columns(3)
    rotation = columns[0].slider("Rotation (± degrees)", *ROTATION_RANGE, value=float(defaults.rotation_degrees),
                                 step=5.0, help="Rotate by a random angle up to this many degrees either way.")
    zoom = columns[1].slider("Zoom (± fraction of the size)", *ZOOM_RANGE, value=float(defaults.zoom), step=0.05,
                             help="Zoom in or out by up to this fraction of the image size.")
    flip = columns[2].toggle("Horizontal flip", value=bool(defaults.horizontal_flip),
                             help="Mirror half of the images left to right.")
    columns = st.columns(3)
    width_shift = columns[0].slider("Width shift (± fraction of the width)", *SHIFT_RANGE,
                                    value=float(defaults.width_shift), step=0.05,
                                    help="Move left or right by up to this fraction of the width.")
    height_shift = columns[1].slider("Height shift (± fraction of the height)", *SHIFT_RANGE,
                                     value=float(defaults.height_shift), step=0.05,
                                     help="Move up or down by up to this fraction of the height.")
    random_crop = columns[2].slider("Random crop (fraction of the area)", *RANDOM_CROP_RANGE,
                                    value=float(defaults.random_crop), step=0.05,
                                    help="Crop away up to this fraction of the area at random and resize back.")
    columns = st.columns(3)
    brightness = columns[0].slider("Brightness (± fraction of white)", *BRIGHTNESS_RANGE,
                                   value=float(defaults.brightness), step=0.05,
                                   help="Add up to ± this fraction of full white to every pixel.")
    contrast = columns[1].slider("Contrast (± fraction)", *CONTRAST_RANGE, value=float(defaults.contrast), step=0.05,
                                 help="Scale the contrast by 1 ± this around the image's mean.")
    photometric = columns[2].slider("Acquisition changes (strength 0–1)", *PHOTOMETRIC_RANGE,
                                    value=float(defaults.photometric), step=0.05,
                                    help="Gamma, blur or sharpening, noise and background level at random strengths "
                                         "up to this (0 = off).")
    split = "train" if "train" in dataset.splits else dataset.splits[0]
    images = dataset.images(split)
    names = image_choices(dataset, split)
    index = st.selectbox(f"Image from {split}", range(len(names)), format_func=names.__getitem__,
                         key="data_preview_image", help="Type to search by file name.")
    augmentation = {"rotation_degrees": rotation, "zoom": zoom, "width_shift": width_shift,
                    "height_shift": height_shift, "horizontal_flip": flip, "brightness": brightness,
                    "contrast": contrast, "random_crop": random_crop, "photometric": photometric}
    config = defaults.replace(image_size=dataset.image_size, **augmentation)
    changed = any(getattr(defaults, name) != value for name, value in augmentation.items())
    if st.button("Use these augmentation settings for training", icon=":material/check:", disabled=not changed,
                 help="The Train page then starts from them." if changed else "They are the Train page's already."):
        st.session_state[ui.KEY_TRAINING_CONFIG] = defaults.replace(**augmentation)
        st.toast("The Train page will use these augmentation settings.", icon=":material/check:")
        st.rerun()
    seed = st.session_state.get("data_augmentation_seed", 0)
    if st.button("New random augmentations", icon=":material/shuffle:"):
        seed = int(np.random.default_rng().integers(1 << 30))
        st.session_state["data_augmentation_seed"] = seed
    with st.spinner("Augmenting…"):
        augmented = ui.augment_examples(images[int(index or 0)], config, count=AUGMENTATIONS_SHOWN, seed=seed)
    st.image([images[int(index or 0)]] + list(augmented), caption=["original"] + [f"random {i + 1}" for i in
                                                                            range(len(augmented))], width=GALLERY_WIDTH)


def explore_section() -> None:
    st.subheader("Look at a data set")
    entries = datasets.list_datasets()
    if not entries:
        st.info("No data set imported yet. Import one above: a folder on the server (for example the Kaggle "
                "chest_xray folder), a .zip of such a folder, or a MedMNIST-style .npz.")
        return
    names = [entry.name for entry in entries]
    wanted = st.session_state.get(ui.KEY_DATASET)
    name = st.selectbox("Data set", names, index=names.index(wanted) if wanted in names else 0)
    st.session_state[ui.KEY_DATASET] = name
    dataset = ui.load_dataset(name, ui.dataset_version(name))
    # Lazy tabs (on_change="rerun"): only the open tab runs, so the page does not load TensorFlow for the
    # augmentation preview, or decode every split for the gallery, until someone asks for it.
    balance_tab, samples_tab, distribution_tab, augmentation_tab, report_tab = st.tabs(
        list(DATA_TABS), key=ui.KEY_DATA_TAB, on_change="rerun")
    if balance_tab.open:
        with balance_tab, ui.guarded("Drawing the class balance"):
            counts = dataset.class_counts()
            st.altair_chart(charts.class_balance_chart(counts), width="stretch")
            table = counts.pivot(index="split", columns="class", values="count").reindex(list(dataset.splits))
            st.dataframe(table, width="content")
    if samples_tab.open:
        with samples_tab, ui.guarded("Showing sample images"):
            sample_gallery(dataset)
    if distribution_tab.open:
        with distribution_tab, ui.guarded("Drawing the distributions"):
            distributions(dataset)
    if augmentation_tab.open:
        with augmentation_tab, ui.guarded("Previewing the augmentation"):
            augmentation_preview(dataset)
    if report_tab.open:
        with report_tab, ui.guarded("Showing the import report"):
            show_report(dataset.report)


def main() -> None:
    st.title("Data")
    import_section()
    report = st.session_state.get(ui.KEY_IMPORT_REPORT)
    if report:
        with st.expander(f"Last import: {report.name}", expanded=True):
            show_report(report)
    explore_section()


ui.run_page(main, key="data")
