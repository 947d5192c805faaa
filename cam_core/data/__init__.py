"""What the engine reads and what it is compared with: images, masks and their formats, ground
truth, stain augmentation, objects (nuclei) and their measures. The ground floor with
:mod:`cam_core.model`."""
