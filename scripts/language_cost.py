"""CPU cost of one language detection (docs/retrieval.md, "The customer's language").

Run: .venv/bin/python scripts/language_cost.py
"""

import time

from mtdesk.retrieval.language import detect_language

TEXTS = [
    "Hi! When are you open on Saturday?",
    "Hola, ¿a qué hora abren el sábado?",
    "Wie lange dauert der Versand nach Österreich?",
    "土曜日は何時に開きますか？",
    "Здравствуйте, когда вы открыты в субботу?",
    "Do you ship this board to Switzerland? I live in Basel and need it by Friday.",
]


def main(rounds: int = 3000) -> None:
    started = time.perf_counter()
    detect_language("warm up the model please")
    print(f"first call (imports + loads the model): {time.perf_counter() - started:.2f} s")
    calls = 0
    cpu = time.process_time()
    for _ in range(rounds):
        for text in TEXTS:
            detect_language(text)
            calls += 1
    print(f"CPU per call: {(time.process_time() - cpu) / calls * 1e6:.1f} us over {calls} calls")


if __name__ == "__main__":
    main()
