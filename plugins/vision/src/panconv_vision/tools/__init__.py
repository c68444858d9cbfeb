"""Vision tools (Eigen-CAM)."""
