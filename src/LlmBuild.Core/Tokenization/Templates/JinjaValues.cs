using System.Globalization;
using System.Text;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Core.Tokenization.Templates;

/// <summary>Jinja's Undefined: prints as nothing, is falsy, iterates as empty; most other uses are errors.</summary>
internal sealed class Undefined(string name)
{
    public string Name { get; } = name;
}

/// <summary>A Python tuple: a list that prints with parentheses (tuple literals, dict items).</summary>
internal sealed class JinjaTuple : List<object?>
{
    public JinjaTuple(IEnumerable<object?> items) : base(items) { }
}

/// <summary>The object <c>namespace(...)</c> returns: attributes that can be set from inside loops.</summary>
internal sealed class JinjaNamespace
{
    public Dictionary<string, object?> Values { get; } = new(StringComparer.Ordinal);
}

internal delegate object? JinjaFunction(List<object?> args, Dictionary<string, object?> kwargs);

/// <summary>A callable value: a global function, a bound method, or a macro.</summary>
internal sealed class JinjaCallable(string name, JinjaFunction function)
{
    public string Name { get; } = name;
    public object? Invoke(List<object?> args, Dictionary<string, object?> kwargs) => function(args, kwargs);
}

/// <summary>The <c>loop</c> variable of a for loop.</summary>
internal sealed class LoopInfo(IReadOnlyList<object?> items)
{
    public int Index0 { get; set; }
    public int Length => items.Count;

    public object? Get(string name) => name switch
    {
        "index" => (long)Index0 + 1,
        "index0" => (long)Index0,
        "revindex" => (long)(Length - Index0),
        "revindex0" => (long)(Length - Index0 - 1),
        "first" => Index0 == 0,
        "last" => Index0 == Length - 1,
        "length" => (long)Length,
        "depth" => 1L,
        "depth0" => 0L,
        "previtem" => Index0 > 0 ? items[Index0 - 1] : new Undefined("loop.previtem"),
        "nextitem" => Index0 + 1 < Length ? items[Index0 + 1] : new Undefined("loop.nextitem"),
        "cycle" => new JinjaCallable("loop.cycle", (args, _) => args.Count == 0 ? null : args[Index0 % args.Count]),
        _ => new Undefined("loop." + name),
    };
}

/// <summary>Python semantics for the values templates handle: None, bool, int (long), float (double), str,
/// list, dict (ordered, string keys), and the helpers above.</summary>
internal static class Py
{
    public static bool Truthy(object? v) => v switch
    {
        null => false,
        Undefined => false,
        bool b => b,
        long l => l != 0,
        double d => d != 0,
        string s => s.Length > 0,
        List<object?> list => list.Count > 0,
        OrderedDictionary<string, object?> dict => dict.Count > 0,
        _ => true,
    };

    public static string TypeName(object? v) => v switch
    {
        null => "NoneType",
        Undefined => "undefined",
        bool => "bool",
        long => "int",
        double => "float",
        string => "str",
        JinjaTuple => "tuple",
        List<object?> => "list",
        OrderedDictionary<string, object?> => "dict",
        JinjaNamespace => "namespace",
        JinjaCallable => "function",
        LoopInfo => "loop",
        _ => v.GetType().Name,
    };

    /// <summary>str(v), as printing a value in a template does.</summary>
    public static string Str(object? v) => v switch
    {
        null => "None",
        Undefined => "",
        string s => s,
        _ => Repr(v),
    };

    public static string Repr(object? v)
    {
        RenderBudget.EnsureStack();
        RenderBudget.Step();
        string text = ReprOf(v);
        RenderBudget.Length(text.Length, "a printed value");
        return text;
    }

    private static string ReprOf(object? v) => v switch
    {
        null => "None",
        Undefined => "",
        bool b => b ? "True" : "False",
        long l => l.ToString(CultureInfo.InvariantCulture),
        double d => FloatRepr(d),
        string s => StringRepr(s),
        JinjaTuple tuple => "(" + string.Join(", ", tuple.Select(Repr)) + (tuple.Count == 1 ? ",)" : ")"),
        List<object?> list => "[" + string.Join(", ", list.Select(Repr)) + "]",
        OrderedDictionary<string, object?> dict => "{" + string.Join(", ", dict.Select(p => StringRepr(p.Key) + ": " + Repr(p.Value))) + "}",
        JinjaNamespace => "<Namespace>",
        _ => v.ToString() ?? "",
    };

    public static string FloatRepr(double d)
    {
        if (double.IsNaN(d)) return "nan";
        if (double.IsInfinity(d)) return d > 0 ? "inf" : "-inf";
        if (d == Math.Floor(d) && Math.Abs(d) < 1e16) return d.ToString("0.0", CultureInfo.InvariantCulture);
        string r = d.ToString("R", CultureInfo.InvariantCulture);
        int e = r.IndexOf('E');
        if (e < 0) return r;
        // Python writes 1e-06 where .NET writes 1E-06.
        string mantissa = r[..e];
        int exponent = int.Parse(r[(e + 1)..], CultureInfo.InvariantCulture);
        return mantissa + "e" + (exponent < 0 ? "-" : "+") + Math.Abs(exponent).ToString("00", CultureInfo.InvariantCulture);
    }

    private static string StringRepr(string s)
    {
        char quote = s.Contains('\'') && !s.Contains('"') ? '"' : '\'';
        var sb = new StringBuilder().Append(quote);
        foreach (char c in s)
        {
            switch (c)
            {
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                default:
                    if (c == quote) sb.Append('\\').Append(c);
                    else if (c < 0x20 || c == 0x7F) sb.Append("\\x").Append(((int)c).ToString("x2", CultureInfo.InvariantCulture));
                    else sb.Append(c);
                    break;
            }
        }
        return sb.Append(quote).ToString();
    }

    public static bool IsNumber(object? v) => v is long or double or bool;

    public static double ToDouble(object? v) => v switch
    {
        long l => l,
        double d => d,
        bool b => b ? 1 : 0,
        _ => throw JinjaTemplate.RenderError(0, $"expected a number, got a {TypeName(v)}"),
    };

    public static new bool Equals(object? a, object? b)
    {
        RenderBudget.EnsureStack();
        RenderBudget.Step();
        if (a is Undefined || b is Undefined) return a is Undefined && b is Undefined;
        if (a is null || b is null) return a is null && b is null;
        if (IsNumber(a) && IsNumber(b))
            return a is double || b is double ? ToDouble(a) == ToDouble(b) : ToLong(a) == ToLong(b);
        if (a is string sa && b is string sb)
        {
            RenderBudget.Touch(sa);
            return sa == sb;
        }
        if (a is List<object?> la && b is List<object?> lb) return la.Count == lb.Count && la.Zip(lb).All(p => Equals(p.First, p.Second));
        if (a is OrderedDictionary<string, object?> da && b is OrderedDictionary<string, object?> db)
            return da.Count == db.Count && da.All(p => db.TryGetValue(p.Key, out var v) && Equals(p.Value, v));
        return ReferenceEquals(a, b);
    }

    /// <summary>An integer value; a float is truncated as Python's int() does, and must fit 64 bits.</summary>
    public static long ToLong(object? v) => v switch
    {
        long l => l,
        bool b => b ? 1 : 0,
        double d => FloatToLong(d),
        _ => throw JinjaTemplate.RenderError(0, $"expected an integer, got a {TypeName(v)}"),
    };

    public static long FloatToLong(double d)
    {
        if (double.IsNaN(d)) throw JinjaTemplate.RenderError(0, "cannot convert float NaN to an integer");
        double t = Math.Truncate(d);
        // 2^63 is the first double above long.MaxValue; every double below it (and from -2^63 up) converts exactly.
        if (t >= 9223372036854775808.0 || t < -9223372036854775808.0)
            throw JinjaTemplate.Error(ErrorCodes.TemplateIntegerOverflow, 0, $"the float {FloatRepr(d)} does not fit a 64-bit integer");
        return (long)t;
    }

    /// <summary>An integer argument that must fit 32 bits (a width, a count, a precision).</summary>
    public static int ToInt(object? v, string what)
    {
        long l = ToLong(v);
        return l is >= int.MinValue and <= int.MaxValue ? (int)l
            : throw JinjaTemplate.RenderError(0, $"{what} {l} is out of range");
    }

    /// <summary>Python's ordering for numbers, strings and lists; anything else is a TypeError (null).</summary>
    public static int? Compare(object? a, object? b)
    {
        RenderBudget.EnsureStack();
        RenderBudget.Step();
        if (IsNumber(a) && IsNumber(b))
            return a is double || b is double ? ToDouble(a).CompareTo(ToDouble(b)) : ToLong(a).CompareTo(ToLong(b));
        if (a is string sa && b is string sb)
        {
            RenderBudget.Touch(sa);
            return CompareCodePoints(sa, sb);
        }
        if (a is List<object?> la && b is List<object?> lb)
        {
            for (int i = 0; i < Math.Min(la.Count, lb.Count); i++)
            {
                if (Equals(la[i], lb[i])) continue;
                return Compare(la[i], lb[i]);
            }
            return la.Count.CompareTo(lb.Count);
        }
        return null;
    }

    private static int CompareCodePoints(string a, string b)
    {
        // Python compares code points; ordinal UTF-16 differs only for surrogates vs U+E000..U+FFFF.
        var ea = a.EnumerateRunes();
        var eb = b.EnumerateRunes();
        while (true)
        {
            bool ha = ea.MoveNext(), hb = eb.MoveNext();
            if (!ha || !hb) return ha.CompareTo(hb);
            int c = ea.Current.Value.CompareTo(eb.Current.Value);
            if (c != 0) return c;
        }
    }

    /// <summary>Iterates a value as Python would in a for loop (a dict yields its keys, a string its characters).</summary>
    public static List<object?>? Iterate(object? v) => v switch
    {
        List<object?> list => Walked(list),
        OrderedDictionary<string, object?> dict => dict.Keys.Cast<object?>().ToList(),
        string s => Characters(s),
        Undefined => [],
        _ => null,
    };

    private static List<object?> Walked(List<object?> list)
    {
        RenderBudget.Step(list.Count);
        return list;
    }

    /// <summary>A string's characters (code points) as a list of strings.</summary>
    public static List<object?> Characters(string s)
    {
        RenderBudget.Step(s.Length);
        return s.EnumerateRunes().Select(r => (object?)r.ToString()).ToList();
    }

    private static int CodePoints(string s)
    {
        RenderBudget.Touch(s);
        return s.EnumerateRunes().Count();
    }

    public static int Length(object? v) => v switch
    {
        string s => CodePoints(s),
        List<object?> list => list.Count,
        OrderedDictionary<string, object?> dict => dict.Count,
        Undefined => 0,
        _ => -1,
    };
}

/// <summary>transformers' tojson: json.dumps(x, ensure_ascii=False, indent=indent, sort_keys=...).</summary>
internal static class PyJson
{
    public static string Dumps(object? value, int? indent, bool sortKeys, int line)
    {
        if (indent < 0) indent = 0; // Python's json.dumps treats a negative indent as 0: newlines, no spaces
        var sb = new StringBuilder();
        Write(sb, value, indent, sortKeys, 0, line);
        return sb.ToString();
    }

    private static void Write(StringBuilder sb, object? v, int? indent, bool sortKeys, int depth, int line)
    {
        RenderBudget.EnsureStack();
        RenderBudget.Step();
        // Each value's indentation is written before it, so check that it fits first: indent × depth can be huge.
        RenderBudget.Fits(sb.Length + (long)(indent ?? 0) * (depth + 1), "the JSON text");
        switch (v)
        {
            case null: sb.Append("null"); break;
            case bool b: sb.Append(b ? "true" : "false"); break;
            case long l: sb.Append(l.ToString(CultureInfo.InvariantCulture)); break;
            case double d:
                sb.Append(double.IsNaN(d) ? "NaN" : double.IsInfinity(d) ? (d > 0 ? "Infinity" : "-Infinity") : Py.FloatRepr(d));
                break;
            case string s:
                RenderBudget.Fits(sb.Length + 2L + s.Length, "the JSON text");
                RenderBudget.Touch(s);
                WriteString(sb, s);
                break;
            case List<object?> list:
                WriteContainer(sb, '[', ']', list.Count, indent, depth, i => Write(sb, list[i], indent, sortKeys, depth + 1, line));
                break;
            case OrderedDictionary<string, object?> dict:
                {
                    var pairs = sortKeys ? dict.OrderBy(p => p.Key, StringComparer.Ordinal).ToList() : dict.ToList();
                    WriteContainer(sb, '{', '}', pairs.Count, indent, depth, i =>
                    {
                        WriteString(sb, pairs[i].Key);
                        sb.Append(": ");
                        Write(sb, pairs[i].Value, indent, sortKeys, depth + 1, line);
                    });
                    break;
                }
            case Undefined u:
                throw new LlmBuildException(ErrorCodes.ChatTemplateRender, $"chat template line {line}: tojson of undefined value '{u.Name}'.");
            default:
                throw new LlmBuildException(ErrorCodes.ChatTemplateRender, $"chat template line {line}: a {Py.TypeName(v)} cannot be converted to JSON.");
        }
    }

    private static void WriteContainer(StringBuilder sb, char open, char close, int count, int? indent, int depth, Action<int> item)
    {
        sb.Append(open);
        if (count == 0) { sb.Append(close); return; }
        for (int i = 0; i < count; i++)
        {
            if (i > 0) sb.Append(indent is null ? ", " : ",");
            if (indent is int n) sb.Append('\n').Append(' ', n * (depth + 1));
            item(i);
        }
        if (indent is int m) sb.Append('\n').Append(' ', m * depth);
        sb.Append(close);
    }

    private static void WriteString(StringBuilder sb, string s)
    {
        sb.Append('"');
        foreach (char c in s)
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                case '\b': sb.Append("\\b"); break;
                case '\f': sb.Append("\\f"); break;
                default:
                    if (c < 0x20) sb.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
                    else sb.Append(c);
                    break;
            }
        }
        sb.Append('"');
    }
}
