namespace LlmBuild.Core.Tokenization;

/// <summary>
/// GPT-2's reversible byte ↔ character mapping: printable Latin-1 bytes map to themselves, the other 68 bytes to
/// U+0100.. in order, so that every byte string becomes a string of visible characters (space → 'Ġ', '\n' → 'Ċ').
/// </summary>
internal static class ByteLevelAlphabet
{
    /// <summary>Byte value → its character.</summary>
    public static readonly char[] ByteToChar = BuildByteToChar();

    /// <summary>Character → byte value, or -1 when the character is not in the alphabet.</summary>
    private static readonly short[] CharToByteTable = BuildCharToByte();

    public static int CharToByte(char c) => c < CharToByteTable.Length ? CharToByteTable[c] : -1;

    private static char[] BuildByteToChar()
    {
        var map = new char[256];
        int next = 256;
        for (int b = 0; b < 256; b++)
        {
            bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            map[b] = printable ? (char)b : (char)next++;
        }
        return map;
    }

    private static short[] BuildCharToByte()
    {
        var table = new short[512];
        Array.Fill(table, (short)-1);
        for (int b = 0; b < 256; b++) table[ByteToChar[b]] = (short)b;
        return table;
    }

    /// <summary>Maps the UTF-8 bytes of <paramref name="text"/> to alphabet characters.</summary>
    public static string Encode(string text)
    {
        byte[] bytes = System.Text.Encoding.UTF8.GetBytes(text);
        return string.Create(bytes.Length, bytes, static (dest, src) =>
        {
            for (int i = 0; i < src.Length; i++) dest[i] = ByteToChar[src[i]];
        });
    }

    /// <summary>
    /// Appends the bytes a token stands for. A token with a character outside the alphabet (an added token such as
    /// a CJK special token) contributes its own UTF-8 bytes, as Hugging Face's ByteLevel decoder does.
    /// </summary>
    public static void AppendBytes(string token, List<byte> output)
    {
        foreach (char c in token)
        {
            if (CharToByte(c) < 0)
            {
                output.AddRange(System.Text.Encoding.UTF8.GetBytes(token));
                return;
            }
        }
        foreach (char c in token) output.Add((byte)CharToByte(c));
    }
}
