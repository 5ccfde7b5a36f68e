using System.Globalization;
using System.Text;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Core.Tokenization.Templates;

/// <summary>
/// A parsed Jinja template and its interpreter, with transformers' chat-template environment: trim_blocks,
/// lstrip_blocks, loop controls, no autoescape, tojson without HTML escaping, raise_exception.
/// </summary>
public sealed class JinjaTemplate
{
    private readonly List<Node> _nodes;

    private JinjaTemplate(List<Node> nodes, JinjaLimits limits)
    {
        _nodes = nodes;
        Limits = limits;
    }

    /// <summary>The bounds every render of this template runs under.</summary>
    public JinjaLimits Limits { get; }

    /// <summary>Parses a template; syntax errors are <see cref="ErrorCodes.ChatTemplateSyntax"/>, constructs outside the
    /// subset <see cref="ErrorCodes.ChatTemplateUnsupported"/>, nesting beyond <see cref="JinjaLimits.MaxDepth"/>
    /// <see cref="ErrorCodes.TemplateDepthLimit"/>.</summary>
    public static JinjaTemplate Parse(string source, JinjaLimits? limits = null)
    {
        limits ??= JinjaLimits.Default;
        return new(JinjaParser.Parse(source, limits.MaxDepth), limits);
    }

    /// <summary>Renders with the given variables (plain .NET values: string, bool, int/long/double, null,
    /// IEnumerable of values, IDictionary&lt;string, object?&gt;; converted to the template's types). Exceeding
    /// <see cref="Limits"/> is a coded error naming the limit.</summary>
    public string Render(IReadOnlyDictionary<string, object?> variables)
    {
        using var budget = RenderBudget.Begin(Limits);
        var globals = new Scope(null);
        foreach (var (name, fn) in Builtins.Globals) globals.Vars[name] = fn;
        foreach (var (name, value) in variables) globals.Vars[name] = Convert(value);
        var output = new StringBuilder();
        var interpreter = new Interpreter();
        interpreter.Exec(_nodes, globals, output);
        return output.ToString();
    }

    /// <summary>Converts .NET values into the interpreter's (long, double, List, ordered dict).</summary>
    internal static object? Convert(object? value)
    {
        RenderBudget.EnsureStack();
        return ConvertValue(value);
    }

    private static object? ConvertValue(object? value) => value switch
    {
        null or string or bool or long or double or Undefined or JinjaCallable or JinjaNamespace => value,
        int i => (long)i,
        float f => (double)f,
        decimal m => (double)m,
        OrderedDictionary<string, object?> od => od,
        IReadOnlyDictionary<string, object?> d => ToDict(d),
        IDictionary<string, object?> d => ToDict(d),
        System.Collections.IEnumerable e => e.Cast<object?>().Select(Convert).ToList(),
        _ => throw new ArgumentException($"A {value.GetType().Name} cannot be passed to a template."),
    };

    private static OrderedDictionary<string, object?> ToDict(IEnumerable<KeyValuePair<string, object?>> pairs)
    {
        var dict = new OrderedDictionary<string, object?>(StringComparer.Ordinal);
        foreach (var (k, v) in pairs) dict[k] = Convert(v);
        return dict;
    }

    internal sealed class Scope(Scope? parent)
    {
        public Dictionary<string, object?> Vars { get; } = new(StringComparer.Ordinal);
        public Scope? Parent { get; } = parent;

        public bool TryGet(string name, out object? value)
        {
            for (var s = this; s is not null; s = s.Parent)
                if (s.Vars.TryGetValue(name, out value)) return true;
            value = null;
            return false;
        }
    }

    private enum Flow { Normal, Break, Continue }

    private sealed class Interpreter
    {
        public void Exec(List<Node> nodes, Scope scope, StringBuilder output)
        {
            var flow = ExecBody(nodes, scope, output);
            if (flow != Flow.Normal) throw RenderError(0, $"'{{% {flow.ToString().ToLowerInvariant()} %}}' outside a loop");
        }

        private Flow ExecBody(List<Node> nodes, Scope scope, StringBuilder output)
        {
            foreach (var node in nodes)
            {
                var flow = ExecNode(node, scope, output);
                if (flow != Flow.Normal) return flow;
            }
            return Flow.Normal;
        }

        private static void Emit(StringBuilder output, string text)
        {
            RenderBudget.Grow((long)output.Length + text.Length, text.Length, "the rendered text");
            output.Append(text);
        }

        private Flow ExecNode(Node node, Scope scope, StringBuilder output)
        {
            RenderBudget.At(node.Line);
            RenderBudget.EnsureStack();
            switch (node)
            {
                case TextNode t:
                    Emit(output, t.Text);
                    return Flow.Normal;
                case OutputNode o:
                    Emit(output, Py.Str(Eval(o.Value, scope)));
                    return Flow.Normal;
                case IfNode i:
                    foreach (var (condition, body) in i.Branches)
                        if (Py.Truthy(Eval(condition, scope))) return ExecBody(body, scope, output);
                    return i.Else is null ? Flow.Normal : ExecBody(i.Else, scope, output);
                case ForNode f:
                    return ExecFor(f, scope, output);
                case SetNode s:
                    {
                        object? value = s.Value is not null ? Eval(s.Value, scope) : RenderToString(s.Body!, scope);
                        Assign(s.Target, value, scope, s.Line);
                        return Flow.Normal;
                    }
                case MacroNode m:
                    scope.Vars[m.Name] = MakeMacro(m, scope);
                    return Flow.Normal;
                case BreakNode:
                    return Flow.Break;
                case ContinueNode:
                    return Flow.Continue;
                default:
                    throw new InvalidOperationException(node.GetType().Name);
            }
        }

        private string RenderToString(List<Node> body, Scope scope)
        {
            var sb = new StringBuilder();
            ExecBody(body, scope, sb);
            return sb.ToString();
        }

        private JinjaCallable MakeMacro(MacroNode m, Scope defining) => new(m.Name, (args, kwargs) =>
        {
            using var call = RenderBudget.EnterCall(m.Name);
            var scope = new Scope(defining);
            for (int i = 0; i < m.Parameters.Count; i++)
            {
                var (name, def) = m.Parameters[i];
                object? value = i < args.Count ? args[i]
                    : kwargs.TryGetValue(name, out var kv) ? kv
                    : def is not null ? Eval(def, scope) : new Undefined(name);
                scope.Vars[name] = value;
            }
            if (args.Count > m.Parameters.Count) throw RenderError(m.Line, $"macro '{m.Name}' takes {m.Parameters.Count} arguments, got {args.Count}");
            return RenderToString(m.Body, scope);
        });

        private Flow ExecFor(ForNode f, Scope scope, StringBuilder output)
        {
            object? iterable = Eval(f.Iterable, scope);
            var items = Py.Iterate(iterable) ?? throw RenderError(f.Line, $"a {Py.TypeName(iterable)} is not iterable");
            var loopScope = new Scope(scope);
            if (f.Filter is not null)
            {
                var kept = new List<object?>();
                foreach (var item in items)
                {
                    RenderBudget.Step();
                    Bind(f, item, loopScope);
                    if (Py.Truthy(Eval(f.Filter, loopScope))) kept.Add(item);
                }
                items = kept;
            }
            if (items.Count == 0)
                return f.Else is null ? Flow.Normal : ExecBody(f.Else, scope, output);
            var loop = new LoopInfo(items);
            loopScope.Vars["loop"] = loop;
            for (int i = 0; i < items.Count; i++)
            {
                RenderBudget.Step();
                loop.Index0 = i;
                Bind(f, items[i], loopScope);
                if (ExecBody(f.Body, loopScope, output) == Flow.Break) break;
            }
            return Flow.Normal;
        }

        private void Bind(ForNode f, object? item, Scope scope)
        {
            if (f.Targets.Count == 1)
            {
                scope.Vars[f.Targets[0]] = item;
                return;
            }
            var parts = Py.Iterate(item);
            if (parts is null || parts.Count != f.Targets.Count)
                throw RenderError(f.Line, $"cannot unpack a {Py.TypeName(item)} into {f.Targets.Count} loop variables");
            for (int i = 0; i < parts.Count; i++) scope.Vars[f.Targets[i]] = parts[i];
        }

        private void Assign(Expr target, object? value, Scope scope, int line)
        {
            switch (target)
            {
                case NameExpr n:
                    scope.Vars[n.Name] = value;
                    break;
                case AttrExpr { Target: NameExpr ns } a:
                    {
                        if (!scope.TryGet(ns.Name, out var obj) || obj is not JinjaNamespace space)
                            throw RenderError(line, $"'{ns.Name}' is not a namespace; only namespace attributes can be set");
                        space.Values[a.Name] = value;
                        break;
                    }
                case TupleExpr t:
                    {
                        var parts = Py.Iterate(value);
                        if (parts is null || parts.Count != t.Items.Count)
                            throw RenderError(line, $"cannot unpack a {Py.TypeName(value)} into {t.Items.Count} names");
                        for (int i = 0; i < parts.Count; i++) Assign(t.Items[i], parts[i], scope, line);
                        break;
                    }
                default:
                    throw RenderError(line, "invalid assignment target");
            }
        }

        public object? Eval(Expr e, Scope scope)
        {
            RenderBudget.At(e.Line);
            RenderBudget.EnsureStack();
            switch (e)
            {
                case ConstExpr c:
                    return c.Value;
                case NameExpr n:
                    return scope.TryGet(n.Name, out var v) ? v : new Undefined(n.Name);
                case ListExpr l:
                    return l.Items.Select(x => Eval(x, scope)).ToList();
                case TupleExpr t:
                    return new JinjaTuple(t.Items.Select(x => Eval(x, scope)));
                case DictExpr d:
                    {
                        var dict = new OrderedDictionary<string, object?>(StringComparer.Ordinal);
                        foreach (var (k, val) in d.Items)
                        {
                            object? key = Eval(k, scope);
                            dict[key as string ?? Py.Str(key)] = Eval(val, scope);
                        }
                        return dict;
                    }
                case AttrExpr a:
                    return Builtins.GetAttr(Eval(a.Target, scope), a.Name, a.Line);
                case ItemExpr i:
                    return Builtins.GetItem(Eval(i.Target, scope), Eval(i.Key, scope), i.Line);
                case SliceExpr s:
                    return Builtins.Slice(Eval(s.Target, scope), s.Start is null ? null : Eval(s.Start, scope),
                        s.Stop is null ? null : Eval(s.Stop, scope), s.Step is null ? null : Eval(s.Step, scope), s.Line);
                case CallExpr call:
                    {
                        object? fn = Eval(call.Function, scope);
                        var (args, kwargs) = EvalArgs(call.Args, call.Kwargs, scope);
                        if (fn is JinjaCallable callable) return callable.Invoke(args, kwargs);
                        if (fn is Undefined u) throw RenderError(call.Line, $"'{u.Name}' is undefined and cannot be called");
                        throw RenderError(call.Line, $"a {Py.TypeName(fn)} is not callable");
                    }
                case FilterExpr f:
                    {
                        object? value = Eval(f.Value, scope);
                        var (args, kwargs) = EvalArgs(f.Args, f.Kwargs, scope);
                        return Builtins.Filter(f.Name, value, args, kwargs, f.Line);
                    }
                case TestExpr t:
                    {
                        object? value = t.Name is "defined" or "undefined" ? EvalOrUndefined(t.Value, scope) : Eval(t.Value, scope);
                        var args = t.Args.Select(x => Eval(x, scope)).ToList();
                        bool result = Builtins.Test(t.Name, value, args, t.Line);
                        return t.Negated ? !result : result;
                    }
                case UnaryExpr u:
                    {
                        object? operand = Eval(u.Operand, scope);
                        return u.Op switch
                        {
                            "not" => !Py.Truthy(operand),
                            "-" => operand switch
                            {
                                long l => (object)Builtins.Negate(l, u.Line),
                                double d => -d,
                                bool b => b ? -1L : 0L,
                                _ => throw RenderError(u.Line, $"bad operand type for unary -: {Py.TypeName(operand)}"),
                            },
                            _ => Py.IsNumber(operand) ? operand : throw RenderError(u.Line, $"bad operand type for unary +: {Py.TypeName(operand)}"),
                        };
                    }
                case BinaryExpr b:
                    {
                        if (b.Op == "and")
                        {
                            object? left = Eval(b.Left, scope);
                            return Py.Truthy(left) ? Eval(b.Right, scope) : left;
                        }
                        if (b.Op == "or")
                        {
                            object? left = Eval(b.Left, scope);
                            return Py.Truthy(left) ? left : Eval(b.Right, scope);
                        }
                        return Builtins.Binary(b.Op, Eval(b.Left, scope), Eval(b.Right, scope), b.Line);
                    }
                case CompareExpr c:
                    {
                        object? left = Eval(c.First, scope);
                        foreach (var (op, rightExpr) in c.Rest)
                        {
                            object? right = Eval(rightExpr, scope);
                            if (!Builtins.Compare(op, left, right, c.Line)) return false;
                            left = right;
                        }
                        return true;
                    }
                case CondExpr c:
                    return Py.Truthy(Eval(c.Test, scope)) ? Eval(c.Then, scope)
                        : c.Else is null ? new Undefined("else branch") : Eval(c.Else, scope);
                default:
                    throw new InvalidOperationException(e.GetType().Name);
            }
        }

        /// <summary>For "is defined": an attribute or item of an undefined value is simply undefined, not an error.</summary>
        private object? EvalOrUndefined(Expr e, Scope scope)
        {
            try
            {
                return Eval(e, scope);
            }
            catch (LlmBuildException ex) when (ex.Code == ErrorCodes.ChatTemplateRender && ex.Data.Contains(Builtins.UndefinedMarker))
            {
                return new Undefined("?");
            }
        }

        private (List<object?>, Dictionary<string, object?>) EvalArgs(List<Expr> args, List<(string Name, Expr Value)> kwargs, Scope scope)
        {
            var values = args.Select(x => Eval(x, scope)).ToList();
            var named = new Dictionary<string, object?>(StringComparer.Ordinal);
            foreach (var (name, value) in kwargs) named[name] = Eval(value, scope);
            return (values, named);
        }
    }

    /// <summary>A render error at <paramref name="line"/>; 0 means the line being rendered.</summary>
    internal static LlmBuildException RenderError(int line, string message) => Error(ErrorCodes.ChatTemplateRender, line, message);

    internal static LlmBuildException Error(string code, int line, string message)
    {
        if (line <= 0) line = RenderBudget.Line;
        return new(code, line > 0 ? $"chat template line {line}: {message}." : $"chat template: {message}.");
    }
}
