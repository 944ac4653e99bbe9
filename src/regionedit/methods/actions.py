"""ZONE's action classifier: change, add or remove, from an instruction.

An MLP (text-embedding size → 128 → ReLU → 3) on the instruct model's pooled text embedding,
trained on instructions generated from templates (the paper asked an LLM for 450 training and 150
test sentences; we generate them from templates over a COCO-like vocabulary, with held-out objects
and phrasings in the test split). Where no classifier is given, or it is unsure, a keyword rule
decides and the recipe says so; a classifier trained on another model's text embeddings is refused
(an error), not replaced by the keyword rule.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from regionedit import defaults
from regionedit.errors import RegionEditError
from regionedit.images import read_tensors, write_tensors

ACTIONS = ("change", "add", "remove")  # the paper's labels 0, 1, 2
FORMAT = "regionedit.action_classifier"
SHIPPED_FILE = "action_classifier.safetensors"  # a model folder's own classifier, used by default
OBJECTS = ("person", "cat", "dog", "horse", "car", "bus", "bicycle", "boat", "bird", "cup", "chair", "table",
           "ball", "box", "tree", "house", "star", "sun", "hat", "tie", "shirt", "umbrella", "clock", "vase", "bench",
           "apple", "banana", "pizza", "cake", "book", "lamp", "kite", "sign", "bag", "bottle", "flower", "cloud")
COLOURS = ("red", "green", "blue", "yellow", "orange", "purple", "pink", "white", "black", "brown", "golden")
TEMPLATES = {
    "change": ("make the {a} {c}", "turn the {a} into a {b}", "change the {a} to a {b}", "replace the {a} with a {b}",
               "paint the {a} {c}", "change the colour of the {a} to {c}", "make the {a} look like a {b}",
               "turn the {a} {c}", "make the {a} a {b}", "change the color of the {a} to {c}", "swap the {a} for a {b}",
               "transform the {a} into a {b}"),
    "add": ("add a {a}", "put a {a} next to the {b}", "add a {c} {a}", "place a {a} on the {b}", "give the {b} a {a}",
            "put a {c} {a} in the picture", "add a {a} beside the {b}", "let there be a {a}", "insert a {a}",
            "place a {c} {a} in the scene", "include a {a} near the {b}", "draw a {a} above the {b}"),
    "remove": ("remove the {a}", "get rid of the {a}", "delete the {a}", "take away the {a}", "erase the {a}",
               "take out the {a}", "remove the {c} {a}", "get rid of the {c} {a}", "make the {a} disappear",
               "clear away the {a}", "eliminate the {a}", "take the {a} out of the picture"),
}
KEYWORDS = (
    ("remove", r"\b(remove|delete|erase|eliminate|get rid of|take (away|out)|clear away|disappear|without)\b"),
    ("add", r"\b(add|put|place|insert|include|draw|let there be|give)\b"),
)


def keyword_action(instruction: str) -> str:
    """The fallback rule: removal verbs, then addition verbs, else change."""
    text = instruction.lower()
    for action, pattern in KEYWORDS:
        if re.search(pattern, text):
            return action
    return "change"


def generate_instructions(split: str, count: int, seed: int = 0, unseen_templates: bool = False) -> list[tuple[str, int]]:
    """(instruction, label) pairs. The test split uses objects unseen in training; with
    ``unseen_templates`` also phrasings unseen in training (a harder generalisation check)."""
    rng = random.Random(f"{split}-{seed}-{unseen_templates}")
    objects = OBJECTS[: -7] if split == "train" else OBJECTS[-7:]
    pairs = []
    for i in range(count):
        label = i % 3
        templates = TEMPLATES[ACTIONS[label]]
        if split == "train" or unseen_templates:
            templates = templates[:-3] if split == "train" else templates[-3:]
        a, b = rng.sample(objects, 2)
        pairs.append((rng.choice(templates).format(a=a, b=b, c=rng.choice(COLOURS)), label))
    rng.shuffle(pairs)
    return pairs


class ActionMLP(nn.Module):
    def __init__(self, embedding_size: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(embedding_size, 128), nn.ReLU(), nn.Linear(128, len(ACTIONS)))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.net(embeddings)


@dataclass
class ActionDecision:
    action: str
    confidence: float | None  # the classifier's probability, None for the keyword rule
    source: str  # "classifier", "keywords" (no classifier) or "keywords (unsure classifier)"


@dataclass
class ActionClassifier:
    """A trained MLP bound to the model whose text embeddings it reads."""

    net: ActionMLP
    model_name: str
    report: dict
    min_confidence: float = 0.5

    @torch.no_grad()
    def decide(self, model, instruction: str) -> ActionDecision:
        probabilities = torch.softmax(self.net(pooled_embedding(model, [instruction]).cpu()), dim=-1)[0]
        confidence, index = probabilities.max(dim=0)
        if confidence < self.min_confidence:
            return ActionDecision(keyword_action(instruction), None, "keywords (unsure classifier)")
        return ActionDecision(ACTIONS[int(index)], float(confidence), "classifier")

    def save(self, path: str | Path) -> Path:
        meta = {"model": self.model_name, "embedding_size": str(self.net.net[0].in_features),
                "report": json.dumps(self.report)}
        return write_tensors(path, dict(self.net.state_dict()), FORMAT, meta)

    @classmethod
    def load(cls, path: str | Path) -> ActionClassifier:
        tensors, meta = read_tensors(path, FORMAT, "action classifier")
        net = ActionMLP(int(meta["embedding_size"]))
        net.load_state_dict(tensors)
        return cls(net.eval(), meta["model"], json.loads(meta["report"]))


def shipped_classifier(folder: str | Path | None, model_name: str) -> ActionClassifier | None:
    """The classifier a model folder ships (``action_classifier.safetensors``), or None. It belongs
    to the model in that folder under whatever name the model was loaded (toy id or path)."""
    path = Path(folder) / SHIPPED_FILE if folder is not None else None
    if path is None or not path.is_file():
        return None
    classifier = ActionClassifier.load(path)
    classifier.model_name = model_name
    return classifier


def decide_action(model, instruction: str, classifier: ActionClassifier | None) -> ActionDecision:
    """The keyword rule without a classifier, else the classifier's decision (itself the keyword rule
    where it is unsure). A classifier trained on another model's embeddings raises an error."""
    if classifier is None:
        return ActionDecision(keyword_action(instruction), None, "keywords")
    if classifier.model_name != model.name:
        raise RegionEditError(f"this action classifier was trained on {classifier.model_name!r}'s text embeddings, "
                              f"not {model.name!r}: train one for this model with `train_classifier` (CLI: `regionedit train-classifier --model {model.name}`)")
    return classifier.decide(model, instruction)


@torch.no_grad()
def pooled_embedding(model, texts: list[str]) -> torch.Tensor:
    """The text encoder's pooled output (the end-of-text token's state), B×D."""
    tokens = model.tokenizer(texts, padding="max_length", max_length=model.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt")
    return model.text_encoder(tokens.input_ids.to(model.device)).pooler_output.float()


def train_classifier(model, train_count: int = defaults.ZONE_TRAIN_INSTRUCTIONS,
                     test_count: int = defaults.ZONE_TEST_INSTRUCTIONS, epochs: int = 300, seed: int = 0,
                     instructions=None) -> ActionClassifier:
    """Fit the MLP on generated instructions embedded by ``model``; report held-out accuracy.

    ``instructions``: ``split, count → [(instruction, label)]`` for the splits "train" and "test"
    (and "test" with unseen phrasings where it can); default: :func:`generate_instructions`, our
    templates over a COCO-like vocabulary."""
    if not model.is_text_conditional:
        raise RegionEditError(f"model {model.name} has no text encoder to classify instructions with")
    torch.manual_seed(seed)
    if instructions is None:
        def instructions(split: str, count: int, unseen_templates: bool = False):
            return generate_instructions(split, count, seed, unseen_templates)
    train, test = instructions("train", train_count), instructions("test", test_count)
    novel = instructions("test", test_count, unseen_templates=True)  # None where the source has no unseen phrasings
    x_train, y_train = pooled_embedding(model, [t for t, _ in train]).cpu(), torch.tensor([y for _, y in train])
    x_test, y_test = pooled_embedding(model, [t for t, _ in test]).cpu(), torch.tensor([y for _, y in test])
    mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-6)
    net = ActionMLP(x_train.shape[1])
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(epochs):
        optimiser.zero_grad()
        nn.functional.cross_entropy(net((x_train - mean) / std), y_train).backward()
        optimiser.step()
    # Fold the standardisation into the first layer, so the saved MLP reads raw embeddings.
    with torch.no_grad():
        first = net.net[0]
        first.bias -= (first.weight * (mean / std)).sum(1)
        first.weight /= std
        accuracy = (net(x_test).argmax(1) == y_test).float().mean().item()
        per_action = {a: (net(x_test[y_test == i]).argmax(1) == i).float().mean().item() for i, a in enumerate(ACTIONS)}
        novel_accuracy = None
        if novel:
            x_novel = pooled_embedding(model, [t for t, _ in novel]).cpu()
            novel_accuracy = (net(x_novel).argmax(1) == torch.tensor([y for _, y in novel])).float().mean().item()
    report = {"train": train_count, "test": test_count, "held_out_accuracy": round(accuracy, 4),
              "per_action": {k: round(v, 4) for k, v in per_action.items()},
              "unseen_phrasing_accuracy": None if novel_accuracy is None else round(novel_accuracy, 4),
              "keyword_rule_accuracy": round(sum(keyword_action(t) == ACTIONS[y] for t, y in test) / len(test), 4),
              "epochs": epochs, "seed": seed}
    return ActionClassifier(net.eval(), model.name, report)
