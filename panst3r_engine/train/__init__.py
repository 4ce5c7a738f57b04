"""Training the panoptic decoder on the user's own scenes and classes (frozen MUSt3R and DINOv2).

Modules by concern: :mod:`.points` (point sampling), :mod:`.matcher` (Hungarian matching),
:mod:`.losses` (Mask2Former losses with deep supervision), :mod:`.data` (scene folders to
targets), :mod:`.cache` (frozen backbone features on disk), :mod:`.loop` (optimiser, schedule,
checkpoints, resume) and :mod:`.cli` (``python -m panst3r_engine train``).
"""
