using System.CommandLine;
using System.Text.Json;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.IO;
using LlmBuild.Core.Tokenization;

namespace LlmBuild.Cli.Commands;

/// <summary><c>llmbuild tokenize --config DIR "text"</c> or <c>--input F.json</c>: token ids as JSON.</summary>
public static class TokenizeCommand
{
    public static Command Create()
    {
        var config = new Option<string>("--config") { Description = "The model's config folder (tokenizer.json, or vocab.json + merges.txt).", Required = true };
        var input = new Option<string?>("--input") { Description = "A JSON file holding a list of strings; prints a list of id lists." };
        var noSpecial = new Option<bool>("--no-special-tokens") { Description = "Do not add the tokenizer's BOS/EOS (as add_special_tokens=False)." };
        var text = new Argument<string?>("text") { Description = "The text to encode.", Arity = ArgumentArity.ZeroOrOne };
        var command = new Command("tokenize", "Encode text with a model's tokenizer and print the ids as JSON.");
        command.Options.Add(config);
        command.Options.Add(input);
        command.Options.Add(noSpecial);
        command.Arguments.Add(text);
        command.SetAction(parse =>
        {
            string? inputPath = parse.GetValue(input);
            string? value = parse.GetValue(text);
            if ((inputPath is null) == (value is null))
                throw new LlmBuildException(ErrorCodes.BadMessages, "Give either a text argument or --input F.json (a JSON list of strings), not both.");
            var tokenizer = Tokenizer.Load(parse.GetValue(config)!);
            bool addSpecial = !parse.GetValue(noSpecial);
            if (value is not null)
            {
                Console.WriteLine(JsonSerializer.Serialize(tokenizer.Encode(value, addSpecial)));
                return 0;
            }
            var texts = ReadStringList(inputPath!);
            Console.WriteLine(JsonSerializer.Serialize(texts.Select(t => tokenizer.Encode(t, addSpecial)).ToArray()));
            return 0;
        });
        return command;
    }

    private static string[] ReadStringList(string path)
    {
        string json = JsonInput.ReadText(path, "--input");
        try
        {
            return JsonSerializer.Deserialize<string[]>(json) ?? throw new JsonException("null");
        }
        catch (JsonException e)
        {
            throw new LlmBuildException(ErrorCodes.BadMessages, $"'{path}' must be a JSON list of strings: {e.Message}", path, e);
        }
    }
}
