using System.Text;

namespace LlmBuild.Core.Tokenization.Unicode;

public enum UnicodeForm { NFC, NFD, NFKC, NFKD }

/// <summary>
/// Unicode normalization (UAX #15): full decomposition, canonical ordering, canonical composition, with Hangul done
/// algorithmically. .NET's <see cref="string.Normalize()"/> is a no-op under InvariantGlobalization, which this
/// repository uses, so tokenizers that declare NFC/NFKC need this. Tables come from Python's unicodedata
/// (see generate_normalization_data.py).
/// </summary>
public static class UnicodeNormalization
{
    private const int SBase = 0xAC00, LBase = 0x1100, VBase = 0x1161, TBase = 0x11A7;
    private const int LCount = 19, VCount = 21, TCount = 28, NCount = VCount * TCount, SCount = LCount * NCount;

    private static readonly Dictionary<int, byte> Ccc = BuildCcc();
    private static readonly Dictionary<int, int[]> Canonical = BuildDecompositions(UnicodeNormalizationData.CanonicalDecompositions);
    private static readonly Dictionary<int, int[]> Compatibility = BuildDecompositions(UnicodeNormalizationData.CompatibilityDecompositions);
    private static readonly Dictionary<long, int> Compositions = BuildCompositions();

    public static string UnicodeVersion => UnicodeNormalizationData.UnicodeVersion;

    public static string Normalize(string text, UnicodeForm form)
    {
        bool compat = form is UnicodeForm.NFKC or UnicodeForm.NFKD;
        bool compose = form is UnicodeForm.NFC or UnicodeForm.NFKC;
        // Below these bounds no character decomposes or combines, so the text is already normal.
        int quickBound = compat ? 0xA0 : compose ? 0x300 : 0xC0;
        bool quick = true;
        foreach (char c in text) if (c >= quickBound) { quick = false; break; }
        if (quick) return text;

        var cps = new List<int>(text.Length);
        for (int i = 0; i < text.Length; i++)
        {
            int cp = text[i];
            if (char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
                cp = char.ConvertToUtf32(text[i], text[++i]);
            Decompose(cp, compat, cps);
        }
        ReorderMarks(cps);
        if (compose) Compose(cps);
        var sb = new StringBuilder(cps.Count);
        foreach (int cp in cps)
        {
            if (cp < 0x10000) sb.Append((char)cp);
            else sb.Append(char.ConvertFromUtf32(cp));
        }
        return sb.ToString();
    }

    private static int CombiningClass(int cp) => Ccc.TryGetValue(cp, out byte c) ? c : 0;

    private static void Decompose(int cp, bool compat, List<int> output)
    {
        if (cp >= SBase && cp < SBase + SCount)
        {
            int s = cp - SBase;
            output.Add(LBase + s / NCount);
            output.Add(VBase + s % NCount / TCount);
            if (s % TCount != 0) output.Add(TBase + s % TCount);
            return;
        }
        if (Canonical.TryGetValue(cp, out int[]? parts) || (compat && Compatibility.TryGetValue(cp, out parts)))
        {
            foreach (int p in parts) Decompose(p, compat, output);
            return;
        }
        output.Add(cp);
    }

    /// <summary>Canonical ordering: a stable sort by combining class of each run of non-starters.</summary>
    private static void ReorderMarks(List<int> cps)
    {
        for (int i = 1; i < cps.Count; i++)
        {
            int c = CombiningClass(cps[i]);
            if (c == 0) continue;
            int j = i;
            while (j > 0 && CombiningClass(cps[j - 1]) > c)
            {
                (cps[j - 1], cps[j]) = (cps[j], cps[j - 1]);
                j--;
            }
        }
    }

    private static void Compose(List<int> cps)
    {
        if (cps.Count == 0) return;
        int starterIndex = -1;
        int write = 0;
        int lastClass = -1;
        for (int read = 0; read < cps.Count; read++)
        {
            int cp = cps[read];
            int cls = CombiningClass(cp);
            if (starterIndex >= 0 && (lastClass < cls || (lastClass == 0 && write - 1 == starterIndex)))
            {
                // Not blocked: the previous kept character is the starter, or has a lower class.
                if (TryCompose(cps[starterIndex], cp, out int composite))
                {
                    cps[starterIndex] = composite;
                    continue;
                }
            }
            if (cls == 0)
            {
                starterIndex = write;
                lastClass = 0;
            }
            else lastClass = cls;
            cps[write++] = cp;
        }
        cps.RemoveRange(write, cps.Count - write);
    }

    private static bool TryCompose(int first, int second, out int composite)
    {
        if (first >= LBase && first < LBase + LCount && second >= VBase && second < VBase + VCount)
        {
            composite = SBase + ((first - LBase) * VCount + (second - VBase)) * TCount;
            return true;
        }
        if (first >= SBase && first < SBase + SCount && (first - SBase) % TCount == 0
            && second > TBase && second < TBase + TCount)
        {
            composite = first + (second - TBase);
            return true;
        }
        return Compositions.TryGetValue(((long)first << 21) | (uint)second, out composite);
    }

    private static Dictionary<int, byte> BuildCcc()
    {
        var data = UnicodeNormalizationData.CombiningClasses;
        var map = new Dictionary<int, byte>(data.Length / 2);
        for (int i = 0; i < data.Length; i += 2) map[data[i]] = (byte)data[i + 1];
        return map;
    }

    private static Dictionary<int, int[]> BuildDecompositions(int[] data)
    {
        var map = new Dictionary<int, int[]>();
        for (int i = 0; i < data.Length;)
        {
            int cp = data[i], n = data[i + 1];
            map[cp] = data.AsSpan(i + 2, n).ToArray();
            i += 2 + n;
        }
        return map;
    }

    private static Dictionary<long, int> BuildCompositions()
    {
        var data = UnicodeNormalizationData.Compositions;
        var map = new Dictionary<long, int>(data.Length / 3);
        for (int i = 0; i < data.Length; i += 3) map[((long)data[i] << 21) | (uint)data[i + 1]] = data[i + 2];
        return map;
    }
}
