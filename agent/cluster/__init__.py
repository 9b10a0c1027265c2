"""Where a job's sandbox runs: on this host (local), or on the node Slurm picks (slurm).

Layer: below jobs, beside network, above the sandbox. The node side (`joblet_agent.node`) runs on
a compute node as the Slurm step the agent started; README "Clusters" writes down what it trusts.
"""
