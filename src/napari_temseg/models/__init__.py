"""Network definitions, bundled weights, checkpoint save/load. No Qt."""
