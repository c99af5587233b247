"""Reports: the reproduction report beside the paper's tables (Markdown and one self-contained HTML page)."""
