"""Job side of the deep-tree attack on the agent: PROBE_DEPTH nested directories in /work (made
with relative mkdir/chdir, so no path is ever long), a file at the bottom and one at the top. The
agent copies /work out after the job and removes the copy on DELETE; neither may break."""
import os

depth = int(os.environ["PROBE_DEPTH"])
with open("/work/ok.txt", "w") as f:
    f.write("ordinary file\n")
os.chdir("/work")
for _ in range(depth):
    os.mkdir("d")
    os.chdir("d")
with open("leaf.txt", "w") as f:
    f.write("the bottom\n")
os.chdir("/work")
print(f"planted: {depth} nested directories", flush=True)
