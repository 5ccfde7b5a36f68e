using System.CommandLine;
using System.Text.Json;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.IO;
using LlmBuild.Core.Tokenization;

namespace LlmBuild.Cli.Commands;

/// <summary><c>llmbuild template --config DIR --messages F.json [--add-generation-prompt]</c>: the rendered prompt.</summary>
public static class TemplateCommand
{
    public static Command Create()
    {
        var config = new Option<string>("--config") { Description = "The model's config folder (tokenizer_config.json with chat_template).", Required = true };
        var messages = new Option<string>("--messages") { Description = "A JSON file holding a list of {\"role\", \"content\"} objects.", Required = true };
        var generation = new Option<bool>("--add-generation-prompt") { Description = "End with the assistant's turn header, as for generation." };
        var command = new Command("template", "Render a conversation with the model's chat template and print the prompt.");
        command.Options.Add(config);
        command.Options.Add(messages);
        command.Options.Add(generation);
        command.SetAction(parse =>
        {
            var template = ChatTemplate.Load(parse.GetValue(config)!);
            var list = ReadMessages(parse.GetValue(messages)!);
            Console.Out.Write(template.Render(list, parse.GetValue(generation)));
            Console.Out.Flush();
            return 0;
        });
        return command;
    }

    internal static List<ChatMessage> ReadMessages(string path)
    {
        string json = JsonInput.ReadText(path, "--messages");
        try
        {
            using var doc = JsonDocument.Parse(json);
            if (doc.RootElement.ValueKind != JsonValueKind.Array) throw new JsonException("the root is not a list");
            var result = new List<ChatMessage>();
            int i = 0;
            foreach (var m in doc.RootElement.EnumerateArray())
            {
                if (m.ValueKind != JsonValueKind.Object || !m.TryGetProperty("role", out var role) || role.ValueKind != JsonValueKind.String
                    || !m.TryGetProperty("content", out var content) || content.ValueKind != JsonValueKind.String)
                    throw new JsonException($"item {i} is not an object with string \"role\" and \"content\"");
                result.Add(new ChatMessage(role.GetString()!, content.GetString()!));
                i++;
            }
            return result;
        }
        catch (JsonException e)
        {
            throw new LlmBuildException(ErrorCodes.BadMessages, $"'{path}' must be a JSON list of {{\"role\", \"content\"}} objects: {e.Message}", path, e);
        }
    }
}
