"""The node side: what a Slurm step of the agent runs on a compute node (README "Clusters").

This package is the node's composition root, as cli.py is the agent's: it sits at the top of the
layers and uses what it needs below (the sandbox, the cluster's wire format and key, a job's /etc
material, the session runner's install, a runtime's manifest). Nothing imports it.

    python -m joblet_agent.node --key KEYFILE --root NODE_ROOT [--runtimes DIR]
"""
