"""The LoopOS submission workflow the emulator plays, as a pure, deterministic state machine.

identify the product -> options (variant, then condition) -> item created in "LoopOS Core"
-> protocol questions (a yes/no question, then a photo) -> done with a summary.

Every step re-asks helpfully on input it cannot read; nothing here raises on user input.
Texts are PT-PT by default and English when the request language starts with "en".
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import html
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "CATALOG",
    "Product",
    "SubmissionState",
    "Workflow",
    "decide",
    "describe",
    "find_product",
    "is_valid_image",
    "lang_of",
]

Lang = Literal["pt", "en"]
Stage = Literal["identify", "options", "protocol", "done"]


def lang_of(language: str | None) -> Lang:
    return "en" if (language or "").strip().lower().startswith("en") else "pt"


def norm(text: str) -> str:
    """Lowercase, no accents, single spaces: what matching compares."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return re.sub(r"[^a-z0-9]+", " ", plain).strip()


@dataclass(frozen=True, slots=True)
class Choice:
    pt: str
    en: str
    factor: float

    def label(self, lang: Lang) -> str:
        return self.en if lang == "en" else self.pt


@dataclass(frozen=True, slots=True)
class OptionGroup:
    key: str
    question_pt: str
    question_en: str
    choices: tuple[Choice, ...]

    def question(self, lang: Lang) -> str:
        return self.question_en if lang == "en" else self.question_pt


@dataclass(frozen=True, slots=True)
class YesNo:
    key: str
    question_pt: str
    question_en: str
    factor_if_yes: float

    def question(self, lang: Lang) -> str:
        return self.question_en if lang == "en" else self.question_pt


@dataclass(frozen=True, slots=True)
class Product:
    name: str
    brand: str
    category_pt: str
    category_en: str
    keywords: tuple[str, ...]  # normalised (see norm); longest match wins
    base_price: float
    variant: OptionGroup
    check: YesNo

    def category(self, lang: Lang) -> str:
        return self.category_en if lang == "en" else self.category_pt


def _group(key: str, pt: str, en: str, *choices: tuple[str, str, float]) -> OptionGroup:
    return OptionGroup(key, pt, en, tuple(Choice(*c) for c in choices))


STORAGE = ("storage", "Qual é a capacidade de armazenamento?", "What is the storage capacity?")
CONDITION = _group(
    "condition",
    "Em que estado está o item?",
    "What condition is the item in?",
    ("Como novo", "Like new", 1.0),
    ("Bom", "Good", 0.85),
    ("Razoável", "Fair", 0.65),
)
PHOTO_PT = "Envie uma fotografia do item."
PHOTO_EN = "Please send a photo of the item."

CATALOG: tuple[Product, ...] = (
    Product(
        "iPhone 12", "Apple", "Smartphones", "Smartphones",
        ("iphone 12", "iphone"), 380.0,
        _group(*STORAGE, ("64 GB", "64 GB", 0.9), ("128 GB", "128 GB", 1.0),
               ("256 GB", "256 GB", 1.15)),
        YesNo("scratches", "O ecrã tem riscos?", "Does the screen have scratches?", 0.85),
    ),
    Product(
        "Galaxy S21", "Samsung", "Smartphones", "Smartphones",
        ("galaxy s21", "samsung s21", "s21", "galaxy", "samsung"), 300.0,
        _group(*STORAGE, ("128 GB", "128 GB", 1.0), ("256 GB", "256 GB", 1.12)),
        YesNo("scratches", "O ecrã tem riscos?", "Does the screen have scratches?", 0.85),
    ),
    Product(
        "MacBook Air M1", "Apple", "Portáteis", "Laptops",
        ("macbook air", "macbook", "portatil apple", "apple laptop"), 650.0,
        _group(*STORAGE, ("256 GB", "256 GB", 1.0), ("512 GB", "512 GB", 1.15)),
        YesNo("keyboard", "O teclado funciona corretamente?", "Does the keyboard work properly?",
              1.0),
    ),
    Product(
        "PlayStation 5", "Sony", "Consolas", "Game consoles",
        ("playstation 5", "playstation", "ps5"), 350.0,
        _group("edition", "Qual é a edição?", "Which edition is it?",
               ("Standard", "Standard", 1.0), ("Digital", "Digital", 0.85)),
        YesNo("controller", "Inclui o comando?", "Does it include the controller?", 1.0),
    ),
    Product(
        "Bicicleta de estrada", "Trek", "Desporto", "Sports",
        ("bicicleta", "bicycle", "bike", "trek"), 450.0,
        _group("size", "Qual é o tamanho do quadro?", "What is the frame size?",
               ("S", "S", 1.0), ("M", "M", 1.0), ("L", "L", 1.0)),
        YesNo("defects", "Tem defeitos visíveis?", "Does it have visible defects?", 0.8),
    ),
    Product(
        "Casaco de inverno", "Zara", "Roupa", "Clothing",
        ("casaco", "jacket", "coat", "blusao"), 40.0,
        _group("size", "Qual é o tamanho?", "What size is it?",
               ("S", "S", 1.0), ("M", "M", 1.0), ("L", "L", 1.0), ("XL", "XL", 1.0)),
        YesNo("defects", "Tem defeitos visíveis?", "Does it have visible defects?", 0.8),
    ),
)  # fmt: skip

_YES = frozenset({"sim", "s", "yes", "y", "yeah", "yep", "tem", "has", "true"})
_NO = frozenset({"nao", "n", "no", "nope", "false", "nenhum", "none"})
_RESTART = frozenset({"recomecar", "restart", "cancelar", "cancel", "nova submissao", "new item"})


def find_product(text: str) -> Product | None:
    """The catalog product whose longest keyword occurs in ``text`` (whole words)."""
    padded = f" {norm(text)} "
    best: tuple[int, Product] | None = None
    for product in CATALOG:
        for keyword in product.keywords:
            if f" {keyword} " in padded and (best is None or len(keyword) > best[0]):
                best = (len(keyword), product)
    return best[1] if best else None


def brand_products(text: str) -> list[Product]:
    words = set(norm(text).split())
    return [p for p in CATALOG if norm(p.brand) in words]


_IMAGE_MAGIC: tuple[bytes, ...] = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a")


def is_valid_image(ref: str) -> bool:
    """An http(s) URL (not fetched) or a ``data:image/*;base64,`` URL holding a real image."""
    ref = ref.strip()
    if ref.startswith(("http://", "https://")):
        return True
    match = re.fullmatch(r"data:(image/[\w.+-]+);base64,(.+)", ref, flags=re.S)
    if not match:
        return False
    try:
        data = base64.b64decode(match.group(2), validate=True)
    except (binascii.Error, ValueError):
        return False
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return True
    return data.startswith(_IMAGE_MAGIC)


@dataclass
class SubmissionState:
    stage: Stage = "identify"
    product: Product | None = None
    choices: dict[str, Choice] = field(default_factory=dict)
    answers: dict[str, bool] = field(default_factory=dict)
    item_id: str | None = None
    photos: int = 0


Reply = dict[str, str]


def _msg(text: str, buttons: list[str] | None = None, body_html: str | None = None) -> Reply:
    out = {"text": text, "role": "assistant"}
    if buttons or body_html:
        inner = body_html or f"<p>{html.escape(text)}</p>"
        if buttons:
            inner += (
                "<div>"
                + "".join(
                    f'<button class="deep-chat-button deep-chat-suggestion-button">'
                    f"{html.escape(b)}</button>"
                    for b in buttons
                )
                + "</div>"
            )
        out["html"] = inner
    return out


def price_range(state: SubmissionState) -> tuple[float, float, float]:
    assert state.product is not None
    value = state.product.base_price
    for choice in state.choices.values():
        value *= choice.factor
    if state.answers.get(state.product.check.key):
        value *= state.product.check.factor_if_yes
    avg = round(value)
    return float(avg), float(round(avg * 0.85)), float(round(avg * 1.15))


@dataclass
class Workflow:
    """One session's workflow. ``step`` is the whole server-side logic of one /chat turn."""

    session_id: str
    submission_base_url: str = ""
    state: SubmissionState = field(default_factory=SubmissionState)

    def step(self, text: str, images: list[str], language: str | None) -> list[Reply]:
        lang = lang_of(language)
        n = norm(text)
        if n in _RESTART:
            self.state = SubmissionState()
            return [_msg(self._t(lang, "O que queres vender?", "What would you like to sell?"),
                         [p.name for p in CATALOG])]  # fmt: skip
        stage = self.state.stage
        if stage == "identify":
            return self._identify(text, lang)
        if stage == "options":
            return self._options(text, lang)
        if stage == "protocol":
            return self._protocol(text, images, lang)
        return self._done(text, lang)

    @staticmethod
    def _t(lang: Lang, pt: str, en: str) -> str:
        return en if lang == "en" else pt

    # --- stages ----------------------------------------------------------------------------

    def _identify(self, text: str, lang: Lang) -> list[Reply]:
        product = find_product(text)
        if product is None:
            same_brand = brand_products(text)
            if same_brand:
                return [_msg(self._t(lang, "Que modelo queres vender?",
                                     "Which model would you like to sell?"),
                             [p.name for p in same_brand])]  # fmt: skip
            return [
                _msg(
                    self._t(
                        lang,
                        "Não consegui identificar o produto. Diz-me o que queres vender, "
                        "por exemplo: «Quero vender um iPhone 12».",
                        "I could not identify the product. Tell me what you want to sell, "
                        "for example: “I want to sell an iPhone 12”.",
                    ),
                    [p.name for p in CATALOG],
                )
            ]
        self.state = SubmissionState(stage="options", product=product)
        intro = self._t(
            lang,
            f"Ótimo! Vou ajudar-te a submeter o teu {product.name} ({product.brand}). "
            f"Encontrei-o no catálogo em {product.category(lang)}.",
            f"Great! I will help you submit your {product.name} ({product.brand}). "
            f"I found it in the catalog under {product.category(lang)}.",
        )
        return [_msg(intro), self._ask_option(lang)]

    def _groups(self) -> tuple[OptionGroup, ...]:
        assert self.state.product is not None
        return (self.state.product.variant, CONDITION)

    def _pending_group(self) -> OptionGroup | None:
        return next((g for g in self._groups() if g.key not in self.state.choices), None)

    def _ask_option(self, lang: Lang, prefix: str = "") -> Reply:
        group = self._pending_group()
        assert group is not None
        return _msg(prefix + group.question(lang), [c.label(lang) for c in group.choices])

    @staticmethod
    def _match_choice(group: OptionGroup, text: str) -> Choice | None:
        n = norm(text)
        if n.isdigit() and 1 <= int(n) <= len(group.choices):
            return group.choices[int(n) - 1]
        for choice in group.choices:
            if n in (norm(choice.pt), norm(choice.en)):
                return choice
        squeezed = f" {n} "
        compact = n.replace(" ", "")
        hits = [
            c
            for c in group.choices
            for label in (norm(c.pt), norm(c.en))
            # "128gb" matches "128 GB"; single letters (sizes) only as whole words
            if f" {label} " in squeezed or (len(label) > 2 and label.replace(" ", "") in compact)
        ]
        return hits[0] if len(set(hits)) == 1 else None

    def _options(self, text: str, lang: Lang) -> list[Reply]:
        group = self._pending_group()
        assert group is not None and self.state.product is not None
        choice = self._match_choice(group, text)
        if choice is None:
            return [self._ask_option(lang, self._t(lang, "Não percebi a opção. ",
                                                   "I did not get that option. "))]  # fmt: skip
        self.state.choices[group.key] = choice
        if self._pending_group() is not None:
            return [self._ask_option(lang)]
        digest = hashlib.sha256(f"{self.session_id}:{self.state.product.name}".encode())
        self.state.item_id = "LC-" + digest.hexdigest()[:8].upper()
        self.state.stage = "protocol"
        created = self._t(
            lang,
            f"Item criado no LoopOS Core com o ID {self.state.item_id}. "
            "Faltam só algumas perguntas.",
            f"Item created in LoopOS Core with ID {self.state.item_id}. Just a few more questions.",
        )
        return [_msg(created), self._ask_check(lang)]

    def _ask_check(self, lang: Lang, prefix: str = "") -> Reply:
        assert self.state.product is not None
        return _msg(
            prefix + self.state.product.check.question(lang),
            [self._t(lang, "Sim", "Yes"), self._t(lang, "Não", "No")],
        )

    def _ask_photo(self, lang: Lang, prefix: str = "") -> Reply:
        return _msg(prefix + self._t(lang, PHOTO_PT, PHOTO_EN))

    def _protocol(self, text: str, images: list[str], lang: Lang) -> list[Reply]:
        product = self.state.product
        assert product is not None
        if product.check.key not in self.state.answers:
            words = norm(text).split()
            first = words[0] if words else ""
            if first in _YES or first in _NO:
                self.state.answers[product.check.key] = first in _YES
                return [self._ask_photo(lang)]
            return [
                self._ask_check(
                    lang, self._t(lang, "Responde Sim ou Não. ", "Please answer Yes or No. ")
                )
            ]
        if not images:
            return [
                self._ask_photo(
                    lang,
                    self._t(lang, "Preciso de pelo menos uma fotografia. ",
                            "I need at least one photo. "),
                )
            ]  # fmt: skip
        if not all(is_valid_image(i) for i in images):
            return [
                self._ask_photo(
                    lang,
                    self._t(lang, "A imagem enviada não é válida. ",
                            "The image you sent is not valid. "),
                )
            ]  # fmt: skip
        self.state.photos += len(images)
        self.state.stage = "done"
        return [self._summary(lang)]

    def title(self) -> str:
        product = self.state.product
        assert product is not None
        variant = self.state.choices.get(product.variant.key)
        return f"{product.brand} {product.name}" + (f" {variant.en}" if variant else "")

    def _summary(self, lang: Lang, prefix: str = "") -> Reply:
        product = self.state.product
        assert product is not None and self.state.item_id is not None
        avg, low, high = price_range(self.state)
        condition = self.state.choices[CONDITION.key].label(lang)
        lines = [
            (self._t(lang, "Título", "Title"), self.title()),
            (self._t(lang, "Estado", "Condition"), condition),
            (self._t(lang, "Preço estimado", "Estimated price"),
             f"{avg:.0f} € ({low:.0f} € – {high:.0f} €)"),
            (self._t(lang, "Fotografias", "Photos"), str(self.state.photos)),
            ("ID", self.state.item_id),
        ]  # fmt: skip
        head = prefix + self._t(
            lang, "Submissão concluída! Resumo:", "Submission complete! Summary:"
        )
        text = head + "\n" + "\n".join(f"{k}: {v}" for k, v in lines)
        body = f"<p>{html.escape(head)}</p><ul>" + "".join(
            f"<li><b>{html.escape(k)}:</b> {html.escape(v)}</li>" for k, v in lines
        )
        body += "</ul>"
        if self.submission_base_url.startswith(("http://", "https://")):
            url = self.submission_base_url.rstrip("/") + f"/items/{self.state.item_id}"
            label = self._t(lang, "Ver submissão", "View submission")
            body += f'<p><a href="{html.escape(url)}">{html.escape(label)}</a></p>'
        return _msg(text, body_html=body)

    def _done(self, text: str, lang: Lang) -> list[Reply]:
        if find_product(text) is not None:
            self.state = SubmissionState()
            return self._identify(text, lang)
        reminder = self._t(
            lang,
            "Esta submissão já está concluída. Para vender outro artigo, diz-me o que é. ",
            "This submission is already complete. To sell another item, tell me what it is. ",
        )
        summary = self._summary(lang, reminder)
        button = self._t(lang, "Nova submissão", "New item")
        summary["html"] += (
            f'<div><button class="deep-chat-button">{html.escape(button)}</button></div>'
        )
        return [summary]


# --- the two one-shot services -----------------------------------------------------------

_BEST = ("novo", "new", "selado", "sealed", "perfeito", "perfect", "excelente", "excellent")
_WORN = ("risco", "riscos", "scratch", "scratches", "scratched", "usado", "used", "marcas")
_BROKEN = ("partido", "broken", "avariado", "cracked", "rachado", "dead", "nao liga")


def decide(
    prompt: str, options: list[str], item_context: str, language: str | None
) -> tuple[str, str]:
    """A deterministic pick among ``options`` with a one-line reasoning."""
    lang = lang_of(language)
    context = f" {norm(item_context)} "
    words = set(norm(f"{prompt} {item_context}").split())
    # An option named in the context wins ("condition: Good" -> Good).
    for option in options:
        if norm(option) and f" {norm(option)} " in context:
            why = ("A opção é mencionada no contexto do item.",
                   "The option is named in the item context.")  # fmt: skip
            return option, why[lang == "en"]
    if any(f" {w} " in context for w in _BROKEN):
        index, why = len(options) - 1, ("O item tem danos graves.", "The item is badly damaged.")
    elif any(f" {w} " in context for w in _WORN):
        index = min(1, len(options) - 1)
        why = ("O item tem sinais de uso.", "The item shows signs of use.")
    elif words & set(_BEST):
        index, why = 0, ("O item parece estar como novo.", "The item looks like new.")
    else:
        digest = hashlib.sha256(f"{prompt}|{item_context}|{'|'.join(options)}".encode())
        index = int(digest.hexdigest(), 16) % len(options)
        why = (
            "Escolha baseada na informação disponível.",
            "Choice based on the information given.",
        )
    return options[index], why[lang == "en"]


def describe(agent_specific: dict[str, str], language: str | None) -> dict[str, object]:
    """The C2C descriptor: a marketplace title, a price range and a description."""
    lang = lang_of(language)
    product_name = agent_specific.get("product_name", "").strip()
    brand = agent_specific.get("brand_name", "").strip()
    category = agent_specific.get("category_name", "").strip()
    user_description = agent_specific.get("user_description", "").strip()
    found = find_product(f"{product_name} {user_description}")
    if found is not None:
        product_name = product_name or found.name
        brand = brand or found.brand
        category = category or found.category(lang)
        base = found.base_price
    else:
        base = 25.0
    context = f" {norm(user_description)} "
    if any(f" {w} " in context for w in _BROKEN):
        base *= 0.4
    elif any(f" {w} " in context for w in _WORN):
        base *= 0.85
    title = " ".join(p for p in (brand, product_name) if p) or (
        user_description[:60] or ("Artigo usado" if lang == "pt" else "Used item")
    )
    avg = round(base)
    sentences = [title, user_description]
    if category:
        sentences.append(("Category: " if lang == "en" else "Categoria: ") + category)
    description = " ".join(s.rstrip(".") + "." for s in sentences if s)
    return {
        "marketplace_posting_title": title,
        "value_out_average": float(avg),
        "value_out_min": float(round(avg * 0.8)),
        "value_out_max": float(round(avg * 1.2)),
        "description": description,
    }
