"""English: the reference catalogue (every key lives here first)."""

from __future__ import annotations

TEXTS: dict[str, str] = {
    # --- turns that fail (core/engine.py) -------------------------------------------------
    "unavailable": (
        "Sorry, the assistant is unavailable right now. Please try again in a few minutes."
    ),
    "timeout": "Sorry, the assistant took too long to answer. Please try again.",
    "malformed": "Sorry, the assistant sent an answer I couldn't read. Please try again.",
    "validation": "The assistant couldn't accept that message. Please change it and try again.",
    "auth": (
        "This assistant is not available at the moment because of a service configuration "
        "problem. The operator has been told."
    ),
    "bad_input": "I couldn't use that message. Please check it and try again.",
    "internal": "Sorry, something went wrong on our side. Please try again.",
    "restarted": "Your previous conversation had expired, so a new one was started.",
    "flood": "You're sending messages too quickly. Please wait {seconds} s and try again.",
    "interrupted": (
        "The service is restarting and your message could not be answered. "
        "Please send it again in a minute."
    ),
    "empty": "The assistant had nothing to say to that. Try rephrasing your message.",
    "choose_option": "Please choose an option below.",
    "resend_after_restart": (
        "Sorry, the assistant restarted while working on your message, and I can't tell "
        "whether it was received. Please send it again."
    ),
    "cancelled": "Stopped. Send your next message whenever you like.",
    "nothing_to_cancel": "There is no answer being prepared right now.",
    # --- why a backend refused a turn (core.types.FailureReason) ---------------------------
    "text_only": "The shopping assistant reads text only: please type your question.",
    "too_long": (
        "Your message is too long for the assistant ({length} characters; the limit is "
        "{limit}). Please shorten it."
    ),
    "rejected": (
        "The assistant couldn't accept that message (it objected to: {fields}). "
        "Please change it and try again."
    ),
    "too_large": "That message is too large for the assistant. Please send fewer photos.",
    "photos_too_large": (
        "Those photos come to {total} together; at most {limit} fit in one message. "
        "Please send fewer photos."
    ),
    "needs_photo": "A listing needs at least one photo of the item.",
    "busy": "The assistant is busy right now. Please try again in {seconds} s.",
    "not_answered": "The assistant could not answer that message. Please try again.",
    # --- what a backend tells besides the answer (core.types.NoticeReason) -----------------
    "photos_dropped": "The shopping assistant reads text only; your photos were not sent.",
    # --- access control -------------------------------------------------------------------
    "refused": "Sorry, this assistant is private. Please ask its operator for access.",
    "admin_only": "Sorry, that command is for administrators only.",
    # --- commands ------------------------------------------------------------------------
    "start": (
        "Hello! I'm your assistant. Send me a message, or a photo of an item with a short "
        "description, and I'll take it from there.\n\n/help lists what I can do."
    ),
    "help_title": "What I can do",
    "help_intro": (
        "Write to me as you would to a person; send photos (or an album) of an item "
        "with a caption to describe it."
    ),
    "help_reset": "/reset: forget this conversation and start over",
    "help_cancel": "/cancel: stop the answer being prepared",
    "help_lang": "/lang CODE: talk in another language (e.g. /lang pt-PT)",
    "help_listing": "/listing DESCRIPTION (as a photo caption): a marketplace listing draft",
    "help_condition": "/condition DESCRIPTION: the item's condition, graded by the assistant",
    "help_groups": "In groups, mention me or reply to my messages.",
    "reset_done": "Done: this conversation starts over. What can I do for you?",
    "lang_usage": "Usage: /lang CODE, for example /lang pt-PT. Current: {current}",
    "lang_not_set": "not set",
    "lang_invalid": "Please give a language code such as en, pt-PT or fr.",
    "reset_nothing": "Nothing to reset yet.",
    "lang_failed": "Sorry, I couldn't switch languages right now.",
    "lang_set": "Language set to {code}; a new conversation has started.",
    "listing_usage": (
        "Send a photo with the caption /listing and a short description, "
        "e.g. /listing blue denim jacket, size M. Name what you know with labels: "
        "/listing brand: Levi's; product: Trucker jacket; category: Clothing; worn twice."
    ),
    "listing_unsupported": "Sorry, this assistant can't prepare listings.",
    "listing_failed": "Sorry, I couldn't prepare a listing right now. Please try again.",
    "listing_price": "Price: {price}",
    "listing_no_price": "no price suggested",
    "condition_usage": (
        "Tell me about the item after the command, e.g. "
        "/condition iPhone 12, light scratches on the back."
    ),
    "condition_unsupported": "Sorry, this assistant can't grade an item's condition.",
    "condition_failed": "Sorry, I couldn't grade that right now. Please try again.",
    "condition_result": "Condition: {decision}",
    "condition_excellent": "Excellent",
    "condition_good": "Good",
    "condition_fair": "Fair",
    "condition_poor": "Poor",
    "listing_range": "Price range: {low} to {high} {currency}",
    # --- command menus (Telegram setMyCommands, Discord slash commands) -------------------
    "menu_start": "Start talking to the assistant",
    "menu_help": "What I can do",
    "menu_reset": "Forget this conversation and start over",
    "menu_cancel": "Stop the answer being prepared",
    "menu_lang": "Change the conversation language, e.g. /lang pt-PT",
    "menu_listing": "Photo + short description: a listing draft",
    "menu_condition": "Describe an item: the AI grades its condition",
    "menu_lang_language": "A language code such as en, pt-PT or fr",
    "menu_admin": "Bot administration",
    "menu_admin_reset": "Reset every conversation of one user",
    "menu_admin_reset_user": "Whose conversations to reset",
    "menu_admin_reset_all": "Reset every conversation of this bot",
    "menu_admin_sessions": "List the most recent conversations",
    "menu_condition_item": "The item and its state, e.g. iPhone 12, light scratches",
    "menu_listing_photo": "A photo of the item",
    "menu_listing_description": "What it is, in a few words",
    # --- messages and buttons ------------------------------------------------------------
    "unsupported_media": (
        "I can read text and photos. Please send your item as a photo or describe it."
    ),
    "not_a_photo": (
        "That file is not a photo I can use. Please send a JPEG, PNG, GIF or WebP image."
    ),
    "download_failed": "I couldn't download that photo. Please try again.",
    "photo_too_large": "That photo is too large ({size}). Please send one under {limit}.",
    "photo_empty": "That file is empty.",
    "too_many_photos": "Please send at most {n} photos in one message.",
    "empty_message": "Hi! Send me a message (or a photo) and I'll pass it to the assistant.",
    "button_expired": "This button has expired. Please type your answer instead.",
    "button_not_yours": (
        "These buttons belong to another conversation. Mention me to start your own."
    ),
    # --- the console (chatbridge demo, console bots) ------------------------------------
    "console_banner": "chatbridge console: talking to bot '{bot}'. /help for commands.",
    "console_help": (
        "Commands:\n"
        "  <number>            press the button with that number\n"
        "  /image PATH [text]  send a photo (with an optional caption)\n"
        "  /condition TEXT     the item's condition, graded by the assistant\n"
        "  /listing PATH TEXT  a marketplace listing draft from a photo and a description\n"
        "  /reset              forget this conversation and start over\n"
        "  /help               this help\n"
        "  /quit               leave (end of input does the same)"
    ),
    "console_you": "you",
    "console_assistant": "assistant",
    "console_link": "link",
    "console_chose": "(you chose: {label})",
    "console_no_choice": "There is no choice {n}; pick 1 to {count}.",
    "console_no_file": "Cannot read {path}: there is no such file.",
    "console_unreadable": "Cannot read {path}.",
    "console_image_usage": "Usage: /image PATH [caption], e.g. /image jacket.jpg my denim jacket",
    "console_listing_usage": (
        "Usage: /listing PATH TEXT, e.g. /listing jacket.jpg blue denim jacket"
    ),
    # --- admin replies -------------------------------------------------------------------
    "admin_stats_title": "Stats",
    "admin_stats": (
        "Sessions: {sessions}\n"
        "Turns running: {running}, queued: {queued}\n"
        "Updates received: {updates}, turns started: {turns}\n"
        "Messages sent: {sent}, edits: {edits}, drafts: {drafts}\n"
        "Rate limits hit: {rate_limited}, refused for good: {refused}\n"
        "Uptime: {hours} h {minutes} min"
    ),
    "admin_reset_user": "Reset {count} conversation(s) of user {user}.",
    "admin_reset_all": "Reset all {count} conversation(s) of this bot.",
    "admin_sessions": "{count} session(s). Most recent:",
}
