"""What the benchmarks share: statistics, process memory, a real agent over HTTP, the agent's code
in-process, and the bubblewrap reference commands. Nothing here is part of the product."""
