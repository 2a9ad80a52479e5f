# bash completion for enginectl (llm-engine's command-line client).
# Installed as /usr/share/bash-completion/completions/enginectl.

# _enginectl_models prints the ids of the loaded models (asks the daemon;
# nothing if it cannot be reached).
_enginectl_models()
{
    local sock=()
    [[ -n $1 ]] && sock=(--socket "$1")
    enginectl "${sock[@]}" models 2>/dev/null | awk 'NR > 1 { print $1 }'
}

_enginectl()
{
    local cur prev words cword
    if declare -F _init_completion >/dev/null 2>&1; then
        _init_completion -n = || return
    else
        cur=${COMP_WORDS[COMP_CWORD]}
        prev=${COMP_WORDS[COMP_CWORD-1]}
        words=("${COMP_WORDS[@]}")
        cword=$COMP_CWORD
    fi

    local commands="info models load unload generate chat tokenize detokenize discover api power metrics sched plan runs run cancel bench tune events help"
    local global_flags="--socket --json --help -h"

    # Find the command and the --socket in use.
    local i cmd="" socket=""
    for ((i = 1; i < cword; i++)); do
        case ${words[i]} in
            --socket) socket=${words[i+1]}; ((i++)) ;;
            --socket=*) socket=${words[i]#--socket=} ;;
            -*) ;;
            *) if [[ -z $cmd ]]; then cmd=${words[i]}; fi ;;
        esac
    done

    # Values of flags.
    case $prev in
        --socket)
            COMPREPLY=($(compgen -f -- "$cur"))
            return ;;
        -m|--model)
            COMPREPLY=($(compgen -W "$(_enginectl_models "$socket")" -- "$cur") $(compgen -f -X '!*.gguf' -- "$cur") $(compgen -d -- "$cur"))
            return ;;
        --plan|-p|--prompt|-n|--max-tokens|--temperature|--top-k|--top-p|--seed)
            return ;;
        --set-cap|--system|-s|--rationale|--limit|--since|--name|--window|--max-p95-ms|--threads|--quant|--batch|-r|--repetitions|-c|--concurrency|--max-seconds|--max-joules)
            return ;;
        --objective)
            COMPREPLY=($(compgen -W "energy throughput" -- "$cur"))
            return ;;
        --kv)
            COMPREPLY=($(compgen -W "F32 F16 F32,F16" -- "$cur"))
            return ;;
        --topic)
            COMPREPLY=($(compgen -W "run plan power model" -- "$cur"))
            return ;;
        --evidence|--template)
            COMPREPLY=($(compgen -f -- "$cur"))
            return ;;
    esac
    case $cur in
        --socket=*)
            COMPREPLY=($(compgen -f -- "${cur#--socket=}"))
            return ;;
    esac

    local flags
    case $cmd in
        "")
            if [[ $cur == -* ]]; then
                COMPREPLY=($(compgen -W "$global_flags" -- "$cur"))
            else
                COMPREPLY=($(compgen -W "$commands" -- "$cur"))
            fi
            return ;;
        help)
            COMPREPLY=($(compgen -W "$commands" -- "$cur"))
            return ;;
        load)
            flags="--plan" ;;
        unload)
            flags=""
            if [[ $cur != -* ]]; then
                COMPREPLY=($(compgen -W "$(_enginectl_models "$socket")" -- "$cur"))
                return
            fi ;;
        generate)
            flags="--model -m --prompt -p --max-tokens -n --temperature --top-k --top-p --seed --plan" ;;
        plan)
            local sub="" j
            for ((j = i - 1; j > 0; j--)); do [[ ${words[j]} == plan ]] && { sub=${words[j+1]}; break; }; done
            if [[ $sub == "$cur" && $cur != -* ]]; then
                COMPREPLY=($(compgen -W "validate show apply list schema diff resolve propose promote rollback history delete" -- "$cur"))
                return
            fi
            flags="--model -m --rationale --evidence --limit -n"
            if [[ $cur != -* ]]; then
                compopt -o filenames 2>/dev/null
                COMPREPLY=($(compgen -f -- "$cur"))
                return
            fi ;;
        runs)
            flags="--limit -n --since" ;;
        bench)
            flags="--model -m --plan --prompt -p --max-tokens -n --repetitions -r --concurrency -c --max-seconds --max-joules" ;;
        tune)
            flags="--model -m --name --objective --max-p95-ms --threads --quant --batch --kv --max-tokens -n --repetitions -r --max-seconds --dry-run" ;;
        events)
            flags="--topic" ;;
        power)
            flags="--set-cap --best-effort" ;;
        chat)
            flags="--model -m --system -s --template --max-tokens -n --temperature --top-k --top-p --seed --plan" ;;
        tokenize)
            flags="--model -m --special --parse-special" ;;
        detokenize)
            flags="--model -m" ;;
        metrics)
            flags="--prometheus --window" ;;
        *)
            flags="" ;;
    esac
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$flags $global_flags" -- "$cur"))
    elif [[ $cmd == load ]]; then
        compopt -o filenames 2>/dev/null
        COMPREPLY=($(compgen -f -X '!*.gguf' -- "$cur") $(compgen -d -- "$cur"))
    fi
}
complete -F _enginectl enginectl
