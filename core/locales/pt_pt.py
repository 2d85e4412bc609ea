"""Português europeu (pt-PT): the sellers' language. Same keys and placeholders as ``en``."""

from __future__ import annotations

TEXTS: dict[str, str] = {
    "unavailable": (
        "Lamento, o assistente não está disponível neste momento. Tente novamente dentro de "
        "alguns minutos."
    ),
    "timeout": "Lamento, o assistente demorou demasiado a responder. Tente novamente.",
    "malformed": "Lamento, o assistente enviou uma resposta que não consegui ler. Tente novamente.",
    "validation": "O assistente não pôde aceitar essa mensagem. Altere-a e tente novamente.",
    "auth": (
        "Este assistente não está disponível de momento devido a um problema de configuração "
        "do serviço. O responsável já foi avisado."
    ),
    "bad_input": "Não consegui usar essa mensagem. Verifique-a e tente novamente.",
    "internal": "Lamento, algo correu mal do nosso lado. Tente novamente.",
    "restarted": "A sua conversa anterior tinha expirado, por isso foi iniciada uma nova.",
    "flood": ("Está a enviar mensagens demasiado depressa. Aguarde {seconds} s e tente novamente."),
    "interrupted": (
        "O serviço está a reiniciar e não foi possível responder à sua mensagem. "
        "Envie-a de novo dentro de um minuto."
    ),
    "empty": "O assistente não tinha nada a dizer sobre isso. Tente reformular a mensagem.",
    "choose_option": "Escolha uma opção abaixo.",
    "resend_after_restart": (
        "Lamento, o assistente reiniciou enquanto tratava da sua mensagem e não sei se ela "
        "chegou. Envie-a de novo, por favor."
    ),
    "cancelled": "Parei. Envie a próxima mensagem quando quiser.",
    "nothing_to_cancel": "Não há nenhuma resposta a ser preparada neste momento.",
    "text_only": "O assistente de compras só lê texto: escreva a sua pergunta, por favor.",
    "photos_dropped": (
        "O assistente de compras só lê texto; as suas fotografias não foram enviadas."
    ),
    "too_long": (
        "A sua mensagem é demasiado longa para o assistente ({length} caracteres; o limite é "
        "{limit}). Encurte-a, por favor."
    ),
    "rejected": (
        "O assistente não pôde aceitar essa mensagem (recusou: {fields}). "
        "Altere-a e tente novamente."
    ),
    "too_large": "Essa mensagem é demasiado grande para o assistente. Envie menos fotografias.",
    "photos_too_large": (
        "Essas fotografias somam {total}; cabem no máximo {limit} numa mensagem. "
        "Envie menos fotografias, por favor."
    ),
    "needs_photo": "Um anúncio precisa de pelo menos uma fotografia do artigo.",
    "busy": "O assistente está ocupado neste momento. Tente novamente dentro de {seconds} s.",
    "not_answered": "O assistente não conseguiu responder a essa mensagem. Tente novamente.",
    "refused": "Lamento, este assistente é privado. Peça acesso ao seu responsável.",
    "admin_only": "Lamento, esse comando é só para administradores.",
    "start": (
        "Olá! Sou o seu assistente. Envie-me uma mensagem, ou uma fotografia de um artigo com "
        "uma breve descrição, e eu trato do resto.\n\n/help mostra o que sei fazer."
    ),
    "help_title": "O que sei fazer",
    "help_intro": (
        "Escreva-me como escreveria a uma pessoa; envie fotografias (ou um álbum) de um artigo "
        "com uma legenda a descrevê-lo."
    ),
    "help_reset": "/reset: esquecer esta conversa e recomeçar",
    "help_cancel": "/cancel: parar a resposta que está a ser preparada",
    "help_lang": "/lang CÓDIGO: falar noutra língua (p. ex. /lang en)",
    "help_listing": "/listing DESCRIÇÃO (como legenda de uma fotografia): um rascunho de anúncio",
    "help_condition": "/condition DESCRIÇÃO: o estado do artigo, avaliado pelo assistente",
    "help_groups": "Em grupos, mencione-me ou responda às minhas mensagens.",
    "reset_done": "Feito: esta conversa recomeça. Em que posso ajudar?",
    "lang_usage": "Utilização: /lang CÓDIGO, por exemplo /lang pt-PT. Atual: {current}",
    "lang_not_set": "não definida",
    "lang_invalid": "Indique um código de língua, como en, pt-PT ou fr.",
    "reset_nothing": "Ainda não há nada para recomeçar.",
    "lang_failed": "Lamento, não consegui mudar de língua neste momento.",
    "lang_set": "Língua definida para {code}; começou uma nova conversa.",
    "listing_usage": (
        "Envie uma fotografia com a legenda /listing e uma breve descrição, "
        "p. ex. /listing casaco de ganga azul, tamanho M. Indique o que souber com etiquetas: "
        "/listing marca: Levi's; produto: casaco Trucker; categoria: Roupa; usado duas vezes."
    ),
    "listing_unsupported": "Lamento, este assistente não prepara anúncios.",
    "listing_failed": "Lamento, não consegui preparar um anúncio agora. Tente novamente.",
    "listing_price": "Preço: {price}",
    "listing_no_price": "sem preço sugerido",
    "condition_usage": (
        "Descreva o artigo a seguir ao comando, p. ex. "
        "/condition iPhone 12, riscos ligeiros na traseira."
    ),
    "condition_unsupported": "Lamento, este assistente não avalia o estado de artigos.",
    "condition_failed": "Lamento, não consegui avaliar isso agora. Tente novamente.",
    "condition_result": "Estado: {decision}",
    "condition_excellent": "Excelente",
    "condition_good": "Bom",
    "condition_fair": "Razoável",
    "condition_poor": "Mau",
    "listing_range": "Intervalo de preço: {low} a {high} {currency}",
    "menu_start": "Começar a falar com o assistente",
    "menu_help": "O que sei fazer",
    "menu_reset": "Esquecer esta conversa e recomeçar",
    "menu_cancel": "Parar a resposta que está a ser preparada",
    "menu_lang": "Mudar a língua da conversa, p. ex. /lang pt-PT",
    "menu_listing": "Fotografia + breve descrição: um rascunho de anúncio",
    "menu_condition": "Descreva um artigo: a IA avalia o seu estado",
    "menu_lang_language": "Um código de língua, como en, pt-PT ou fr",
    "menu_admin": "Administração do bot",
    "menu_admin_reset": "Recomeçar todas as conversas de um utilizador",
    "menu_admin_reset_user": "O utilizador cujas conversas recomeçam",
    "menu_admin_reset_all": "Recomeçar todas as conversas deste bot",
    "menu_admin_sessions": "Listar as conversas mais recentes",
    "menu_condition_item": "O artigo e o seu estado, p. ex. iPhone 12, riscos ligeiros",
    "menu_listing_photo": "Uma fotografia do artigo",
    "menu_listing_description": "O que é, em poucas palavras",
    "unsupported_media": (
        "Leio texto e fotografias. Envie o seu artigo como fotografia ou descreva-o."
    ),
    "not_a_photo": (
        "Esse ficheiro não é uma fotografia que eu consiga usar. Envie uma imagem JPEG, PNG, "
        "GIF ou WebP."
    ),
    "download_failed": "Não consegui descarregar essa fotografia. Tente novamente.",
    "photo_too_large": (
        "Essa fotografia é demasiado grande ({size}). Envie uma com menos de {limit}."
    ),
    "photo_empty": "Esse ficheiro está vazio.",
    "too_many_photos": "Envie no máximo {n} fotografias por mensagem.",
    "empty_message": "Olá! Envie-me uma mensagem (ou uma fotografia) e eu passo-a ao assistente.",
    "button_expired": "Este botão expirou. Escreva a sua resposta, por favor.",
    "button_not_yours": (
        "Estes botões pertencem a outra conversa. Mencione-me para começar a sua."
    ),
    "console_banner": "consola chatbridge: a falar com o bot '{bot}'. /help mostra os comandos.",
    "console_help": (
        "Comandos:\n"
        "  <número>                carregar no botão com esse número\n"
        "  /image CAMINHO [texto]  enviar uma fotografia (com uma legenda opcional)\n"
        "  /condition TEXTO        o estado do artigo, avaliado pelo assistente\n"
        "  /listing CAMINHO TEXTO  um rascunho de anúncio a partir de uma fotografia e de uma "
        "descrição\n"
        "  /reset                  esquecer esta conversa e recomeçar\n"
        "  /help                   esta ajuda\n"
        "  /quit                   sair (o fim da entrada faz o mesmo)"
    ),
    "console_you": "você",
    "console_assistant": "assistente",
    "console_link": "ligação",
    "console_chose": "(escolheu: {label})",
    "console_no_choice": "Não há a escolha {n}; escolha de 1 a {count}.",
    "console_no_file": "Não consigo ler {path}: esse ficheiro não existe.",
    "console_unreadable": "Não consigo ler {path}.",
    "console_image_usage": (
        "Utilização: /image CAMINHO [legenda], p. ex. /image casaco.jpg o meu casaco de ganga"
    ),
    "console_listing_usage": (
        "Utilização: /listing CAMINHO TEXTO, p. ex. /listing casaco.jpg casaco de ganga azul"
    ),
    "admin_stats_title": "Estatísticas",
    "admin_stats": (
        "Sessões: {sessions}\n"
        "Turnos em curso: {running}, em espera: {queued}\n"
        "Atualizações recebidas: {updates}, turnos iniciados: {turns}\n"
        "Mensagens enviadas: {sent}, edições: {edits}, rascunhos: {drafts}\n"
        "Limites de ritmo atingidos: {rate_limited}, recusadas de vez: {refused}\n"
        "Em funcionamento há {hours} h {minutes} min"
    ),
    "admin_reset_user": "Reiniciadas {count} conversa(s) do utilizador {user}.",
    "admin_reset_all": "Reiniciadas todas as {count} conversa(s) deste bot.",
    "admin_sessions": "{count} sessão(ões). Mais recentes:",
}
