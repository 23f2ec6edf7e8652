"""Test suite package: lets the netns helpers be imported as tests.* (and run as python -m tests.topology)."""
