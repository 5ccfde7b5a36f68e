using System.Globalization;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Cli.Commands;

/// <summary>Parses token id lists given on a command line: "1,2,3", or the path of a file of ids (commas, spaces, newlines, optional [ ]).</summary>
public static class TokenIds
{
    public static int[] Parse(string value)
    {
        string text = value;
        string where = "--ids";
        if (File.Exists(value))
        {
            text = File.ReadAllText(value);
            where = $"'{value}'";
        }
        var parts = text.Split([',', ' ', '\t', '\r', '\n', '[', ']'], StringSplitOptions.RemoveEmptyEntries);
        var ids = new int[parts.Length];
        for (int i = 0; i < parts.Length; i++)
            if (!int.TryParse(parts[i], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out ids[i]) || ids[i] < 0)
                throw new LlmBuildException(ErrorCodes.BadTokenIds, $"{where}: '{parts[i]}' is not a token id (a non-negative integer). Give ids as 1,2,3 or the path of a file of ids.");
        if (ids.Length == 0) throw new LlmBuildException(ErrorCodes.BadTokenIds, $"{where} holds no token ids.");
        return ids;
    }
}
