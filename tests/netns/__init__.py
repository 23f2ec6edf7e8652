"""End-to-end tests that run the real plugin executable against throwaway network namespaces."""
