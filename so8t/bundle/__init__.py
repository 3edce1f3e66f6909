"""The bundle: what an export directory holds beside the GGUF files, so a user can hand it on.

* ``Modelfile`` (so8t/bundle/modelfile.py): Ollama's recipe, the checkpoint's chat template translated
  to Ollama's Go template, its stop tokens and sampling defaults, and the mmproj;
* ``README.md`` (so8t/bundle/card.py): the model card, source, gates, training and the guard's eval
  metrics, every file with its size, type, validation verdict and KL, and the commands that run it;
* ``SHA256SUMS`` (so8t/bundle/sums.py): ``sha256sum -c`` checks every file listed in the card.

``so8t export`` writes the bundle with the GGUF files (renamed into place together); ``so8t pipeline``
writes it again after validation, so the card carries the verdicts of ``reports/validate-<TYPE>.json``.
"""

from so8t.bundle.write import BundleFile, check_replaceable, export_files, write_bundle

__all__ = ["BundleFile", "check_replaceable", "export_files", "write_bundle"]
