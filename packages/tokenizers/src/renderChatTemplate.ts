/**
 * Chat templates: the model's own Jinja `chat_template`, rendered with @huggingface/jinja (the
 * engine transformers.js uses) over the variables transformers' apply_chat_template passes:
 * messages, add_generation_prompt, tools, documents and the special tokens' strings
 * (raise_exception and strftime_now are the engine's built-ins).
 */
import {Template} from "@huggingface/jinja";
import {ErrorCodes, MixzError} from "@mixz/protocol";
import type {ChatMessage, ChatTemplateOptions} from "./Tokenizer.js";

/** One template, several named ones (tokenizer_config's list form), or none. */
export type ChatTemplates = string | ReadonlyMap<string, string> | null;

const compiled = new Map<string, Template>();

/** The template to use: the only one, or by name ("default"; "tool_use" when tools are given and it exists). */
export function selectChatTemplate(templates: ChatTemplates, name: string | undefined, withTools: boolean): string | null {
    if (templates === null || typeof templates === "string") return templates;
    if (name !== undefined) return templates.get(name) ?? null;
    if (withTools && templates.has("tool_use")) return templates.get("tool_use")!;
    return templates.get("default") ?? null;
}

export function renderChatTemplate(dir: string, templates: ChatTemplates, specialTokens: Readonly<Record<string, string>>,
    messages: readonly ChatMessage[], options: ChatTemplateOptions = {}): string {
    const source = selectChatTemplate(templates, options.templateName, options.tools !== undefined);
    if (source === null) {
        const what = options.templateName === undefined ? "no chat_template" : `no chat template named "${options.templateName}"`;
        throw new MixzError(ErrorCodes.tokenizer,
            `${dir}: the model has ${what} (tokenizer_config.json or chat_template.jinja); format the prompt yourself or add one`,
            {category: "user", context: {dir}});
    }
    try {
        let template = compiled.get(source);
        if (template === undefined) {
            template = new Template(source);
            compiled.set(source, template);
        }
        return template.render({
            ...specialTokens,
            ...options.variables,
            messages,
            add_generation_prompt: options.addGenerationPrompt ?? false,
            ...(options.tools === undefined ? {} : {tools: options.tools}),
            ...(options.documents === undefined ? {} : {documents: options.documents})
        });
    } catch (error) {
        throw new MixzError(ErrorCodes.tokenizer, `${dir}: the chat template failed: ${(error as Error).message}`,
            {category: "user", context: {dir}, cause: error});
    }
}
