"""Small fixtures in each GLUE task's exact file layout, written from the task table.

Every field a layout has is filled (ids, genres, parses as short placeholders), the text
columns with words the tiny test BERT knows, the label column with the task's labels
(floats in [0, 5] for STS-B) and the index column with the row number. MRPC's train and
dev files start with a UTF-8 byte-order mark, as GLUE's download script writes them.
"""
import random
from pathlib import Path

from fine_tune.glue import get_task

WORDS = ("a man is playing the guitar while a woman sings in the park near the river "
         "children are reading books at school and the dog sleeps on a red chair").split()
BOM_FILES = {("mrpc", "train"), ("mrpc", "dev")}


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9)))


def write_task(data_dir, task_name: str, rows: int = 24, seed: int = 0) -> Path:
    """data_dir/<folder>/<file> for every split of the task; returns the folder."""
    task = get_task(task_name)
    rng = random.Random(seed)
    folder = Path(data_dir) / task.folder
    folder.mkdir(parents=True, exist_ok=True)
    for split, (name, layout) in task.files.items():
        lines = [] if layout.header is None else ["\t".join(layout.header)]
        for i in range(rows):
            fields = [f"f{column}-{i}" for column in range(layout.width)]
            for column in layout.text:
                fields[column] = sentence(rng)
            if layout.index is not None:
                fields[layout.index] = str(i)
            if layout.label is not None:
                fields[layout.label] = (f"{rng.uniform(0, 5):.3f}" if task.regression
                                        else task.labels[i % len(task.labels)])
            lines.append("\t".join(fields))
        text = "\n".join(lines) + "\n"
        prefix = "\ufeff" if (task_name, split) in BOM_FILES else ""
        (folder / name).write_text(prefix + text, encoding="utf-8")
    return folder
