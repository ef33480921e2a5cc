"""``mtdesk bot set|show``: a tenant's bot (operator). ``set`` changes only the options
given and keeps the rest; the API's ``PUT /bot`` replaces the whole config."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import msgspec

from mtdesk.cli.store_session import run_with_store
from mtdesk.core.clock import SystemClock
from mtdesk.core.errors import ValidationError
from mtdesk.core.ports import BotConfig
from mtdesk.core.redis import Redis
from mtdesk.core.sealing import TenantCipher
from mtdesk.core.settings import Settings
from mtdesk.core.tenants import Bots, BotUpdate, Tenants, apply_bot_update
from mtdesk.core.validation import convert


def register(sub: Any) -> None:
    parser = sub.add_parser("bot", help="configure a tenant's bot",
                            description="Show or change a tenant's bot (operator).")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    put = verbs.add_parser(
        "set", help="change bot options (others are kept)",
        description="Change the options given; the others keep their current values. "
        "--provider is 'extractive' (answers from the knowledge base, no LLM) or a "
        "configured provider (openrouter, fireworks, minimax, moonshot, openai, or "
        "MTDESK_PROVIDER_<NAME>_BASE_URL); other providers need --model.",
    )
    put.add_argument("--tenant", required=True, help="tenant id")
    put.add_argument("--provider", help="extractive or a provider name")
    put.add_argument("--model", help="model name at the provider")
    prompt = put.add_mutually_exclusive_group()
    prompt.add_argument("--system-prompt", help="the system prompt")
    prompt.add_argument("--system-prompt-file", type=Path, help="read the system prompt from a file")
    put.add_argument("--temperature", type=float, help="0 to 2")
    put.add_argument("--max-tokens", type=int, help="reply length limit in tokens")
    put.add_argument("--fallback", action="append", metavar="PROVIDER:MODEL",
                     help="a fallback tried in order when the provider fails (repeatable; "
                     "--fallback '' clears the list)")
    put.add_argument("--grounding", choices=("knowledge_only", "general"),
                     help="answer only from the knowledge base, or also generally")
    put.add_argument("--fallback-message", help="what to say when nothing fits")
    put.add_argument("--min-score", type=float, help="retrieval score needed (0 to 1)")
    put.add_argument("--greeting", help="first message to a new conversation")
    put.add_argument("--comment-replies", choices=("off", "private"),
                     help="Instagram comments: only recorded (off), or answered with one "
                     "private message to the commenter (private)")
    state = put.add_mutually_exclusive_group()
    state.add_argument("--enable", dest="enabled", action="store_const", const=True,
                       help="the bot answers")
    state.add_argument("--disable", dest="enabled", action="store_const", const=False,
                       help="the bot stays silent (messages are still recorded)")
    put.set_defaults(handler=_set)
    show = verbs.add_parser("show", help="print the bot config as JSON",
                            description="Print a tenant's bot config as JSON.")
    show.add_argument("--tenant", required=True, help="tenant id")
    show.set_defaults(handler=_show)


_OPTIONS = ("provider", "model", "system_prompt", "temperature", "max_tokens", "grounding",
            "fallback_message", "min_score", "greeting", "enabled", "comment_replies")


def _changes(args: argparse.Namespace) -> BotUpdate:
    """The options given, checked like the API's body (a bad one names its option)."""
    given: dict[str, object] = {
        name: getattr(args, name) for name in _OPTIONS if getattr(args, name) is not None
    }
    if args.system_prompt_file is not None:
        try:
            given["system_prompt"] = args.system_prompt_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValidationError("--system-prompt-file", f"cannot read it: {exc}") from None
    if args.fallback is not None:
        given["fallback"] = [f for f in args.fallback if f]
    if not given:
        raise ValidationError("bot set", "give at least one option to change (see --help)")
    try:
        return convert(given, BotUpdate)
    except ValidationError as exc:
        raise ValidationError("--" + exc.field.replace("_", "-"), exc.problem) from None


def _print(config: BotConfig) -> None:
    print(msgspec.json.format(msgspec.json.encode(msgspec.structs.asdict(config))).decode())


def _set(args: argparse.Namespace) -> int:
    changes = _changes(args)

    async def job(redis: Redis, settings: Settings) -> BotConfig:
        await Tenants(redis, SystemClock()).get(args.tenant)
        bots = Bots(redis, TenantCipher.from_settings(redis, settings))
        config = apply_bot_update(changes, settings.providers, await bots.get(args.tenant))
        return await bots.put(args.tenant, config)

    _print(run_with_store(job))
    return 0


def _show(args: argparse.Namespace) -> int:
    async def job(redis: Redis, settings: Settings) -> BotConfig:
        await Tenants(redis, SystemClock()).get(args.tenant)
        return await Bots(redis, TenantCipher.from_settings(redis, settings)).get(args.tenant)

    _print(run_with_store(job))
    return 0
