"""``python -m napari_temseg`` runs the ``temseg`` command."""

from napari_temseg.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
