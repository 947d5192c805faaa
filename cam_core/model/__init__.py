"""Models: the registry and folder loading (safetensors only), the spec a folder declares, the
decision rule, the layers worth explaining, and the rule that leaves a model's state as found.
The ground floor with :mod:`cam_core.data`: imports nothing of the engine or above."""
