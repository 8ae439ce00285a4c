#!/usr/bin/perl

# Hostile input, case by case from t/hostile/MANIFEST: every file is
# sent to the location the manifest names, and the module answers
# exactly the status the manifest expects, changes nothing in Redis
# unless it challenges (then it adds one security token) or records the
# device of a TokenUpdate the MDM server accepted (%RECORDS below),
# passes what it does not read to the MDM server byte for byte, and its
# worker goes on: the same process serves a plain request after every
# case.
#
# Cases marked "crash" in the manifest crash a worker with today's
# build; they run as TODO, so that they are reported without failing
# the suite, and say so when they pass.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;

use MdmWatch::Pki;
use MdmWatch::Test;

my $corpus = "$FindBin::Bin/hostile";
my $ca = "$corpus/pki/ca.pem";

# check-ins passed to the MDM server that the module reads, and records
# once the MDM server accepted them: an unsigned TokenUpdate or
# Authenticate is recorded with no identity; file => the device
my %RECORDS = (
    'checkin-invalid-utf8.xml' => '00008301-0A1B2C3D4E5F6071',
);

plan skip_all => 'no corpus: run perl t/hostile/generate.pl'
    unless -f "$corpus/MANIFEST" && -f $ca;

# the corpus was signed under committed test certificates that expire
plan skip_all => "the corpus certificates have expired: delete"
    . ' t/hostile/pki and run perl t/hostile/generate.pl'
    unless eval { MdmWatch::Pki::run('openssl', 'x509', '-noout',
        '-checkend', '0', '-in', "$corpus/pki/watch.pem"); 1 };

my @cases = read_manifest("$corpus/MANIFEST");
cmp_ok(scalar @cases, '>=', 40, 'the corpus has at least 40 cases');

my $t = MdmWatch::Test->new->setup(trusted_certificate => $ca);
my $phone = '00008110-000A1B2C3D4E5F60';

# state for a refusal to disturb: a pair, a live pairing token and a
# live security token, made by the corpus's own watch certificate
my ($watch) = MdmWatch::Pki::run('openssl', 'x509', '-noout', '-subject',
    '-nameopt', 'RFC2253', '-in', "$corpus/pki/watch.pem") =~ /CN=([^,\s]+)/;
my $st = $t->challenge(body => sign_corpus_watch());
my $token = $t->get_token(udid => $phone, security_token => $st // '',
    watch_udid => $watch);
ok(defined $token, 'the corpus CA is trusted: a watch gets a pairing token');
$t->challenge(body => sign_corpus_watch());
$t->get_token(udid => $phone, security_token => MdmWatch::Test::random_uuid(),
    watch_udid => $watch);

my ($worker) = $t->wait_workers(1);
ok($worker, "nginx runs one worker, $worker");

# alert lines logged while a case marked crash ran: reported as TODO
my %excused;

for my $c (@cases) {
    my $body = MdmWatch::Test::slurp("$corpus/$c->{file}");
    my $before = $t->redis_snapshot;
    my $upstream = $t->upstream_count;
    my $crashes = () = $t->crashes;
    my $mark = $t->log_mark;

    my $res = send_case($c, $body);

    TODO: {
        local $TODO = $c->{known} eq 'crash'
            ? 'crashes a worker with libplist 2.2 today' : undef;

        # the assertions of the harness look for $TODO in its package
        local $MdmWatch::Test::TODO = $TODO;

        check_answer($c, $res, $body, $before, $upstream);

        my @new = ($t->crashes)[$crashes .. $t->crashes - 1];
        ok(!@new, "$c->{file}: no worker exited on a signal")
            or diag(join "\n", @new);

        my $plain = $t->request(uri => '/plain', timeout => 5);
        is($plain->{status}, 200, "$c->{file}: a plain request is served"
            . ' after it');
        my @workers = $t->wait_workers(1);
        is("@workers", $worker, "$c->{file}: by the same worker process");
        $worker = $workers[0] if @workers == 1;
    }

    if ($c->{known} eq 'crash') {
        $excused{$_} = $c->{file} for grep { /\[(?:alert|crit|emerg)\]/ }
            split /\n/, substr($t->error_log, $mark);
    }
}

# as finish does, but the alerts of the cases marked crash are TODO

$t->stop_nginx;
my @alerts = $t->alerts;
ok(!grep({ !$excused{$_} } @alerts),
    'the error log has no alert, crit or emerg line but those of cases'
    . ' marked crash') or diag(join "\n", grep { !$excused{$_} } @alerts);
TODO: {
    local $TODO = 'cases marked crash crash a worker today'
        if grep { $_->{known} eq 'crash' } @cases;
    ok(!%excused, 'the cases marked crash log no alert either')
        or diag(join "\n", map { "$excused{$_}: $_" } sort keys %excused);
}
done_testing();

diag($ENV{TEST_NGINX_LEAVE} ? 'the test folder is kept: ' . $t->dir
                            : 'set TEST_NGINX_LEAVE=1 to keep the test folder')
    unless Test::More->builder->is_passing;


sub read_manifest {
    my ($file) = @_;
    my @list;

    for my $line (split /\n/, MdmWatch::Test::slurp($file)) {
        next if $line =~ /^\s*(?:#|$)/;
        my ($name, $to, $type, $expect, $known, $what) =
            split ' ', $line, 6;
        die "MANIFEST: bad line: $line\n"
            unless defined $what && $to =~ /^(?:enroll|checkin)$/
                && $expect =~ /^(?:400|403|403-challenge|200-upstream)$/
                && $known =~ /^(?:-|crash)$/;
        push @list, { file => $name, to => $to, type => $type,
            expect => $expect, known => $known, what => $what };
    }
    return @list;
}

sub sign_corpus_watch {
    return MdmWatch::Message::sign(MdmWatch::Message::machine_info(
        UDID => $watch), cert => "$corpus/pki/watch.pem",
        key => "$corpus/pki/watch.key");
}

sub send_case {
    my ($c, $body) = @_;
    return $t->request(
        method  => $c->{to} eq 'enroll' ? 'POST' : 'PUT',
        uri     => $c->{to} eq 'enroll' ? $MdmWatch::Test::ENROLL_URI
                                        : $MdmWatch::Test::CHECKIN_URI,
        headers => [['Content-Type', $c->{type}]],
        body    => $body,
        timeout => 10,
    );
}

sub check_answer {
    my ($c, $res, $body, $before, $upstream) = @_;
    my $name = "$c->{file} ($c->{what})";
    my $expect = $c->{expect};

    if ($expect eq '403-challenge') {
        my $st = $t->challenge_ok($res, "$name is challenged");
        challenge_state_ok($c, $st, $before);
        $t->redis('DEL', 'mdm_watch:security_token:' . ($st // '?'));
        is($t->upstream_count, $upstream,
            "$c->{file}: nothing reached the MDM server");
        return;
    }

    if ($expect eq '200-upstream') {
        is($res->{status}, 200, "$name is answered 200 by the MDM server")
            or diag(MdmWatch::Test::describe($res));
        ok(exists $res->{headers}{'x-standin-request'},
            "$c->{file}: the answer comes from the MDM server");
        # the stand-in records a request before it answers
        my @up = $t->upstream_requests;
        is(scalar @up, $upstream + 1,
            "$c->{file}: the MDM server received it once");
        $t->passed_ok($up[$upstream], method => 'PUT', body => $body,
            headers => [['Content-Type', $c->{type}]],
            name => "$c->{file}: the MDM server received the body byte for"
                . ' byte');

        # the module records after the answer: once the barrier's record
        # is in Redis, so is what this case made it record
        ok($t->registry_barrier,
            "$c->{file}: the module records again after it")
            if $c->{to} eq 'checkin';
        if (my $udid = $RECORDS{ $c->{file} }) {
            my $key = $t->device_key($udid);
            my @diff = MdmWatch::Test::redis_diff($before,
                $t->redis_snapshot);
            ok(@diff == 1 && $diff[0] =~ /^added\ \Q$key\E\ \(hash
                \ enrolled_at=\d+,identity=,identity_source=none,
                message=TokenUpdate,udid=\Q$udid\E\ no-ttl\)$/x,
                "$c->{file}: Redis gains the record of the device, without"
                . ' identity, and nothing else') or diag(join "\n", @diff);
            $t->redis('DEL', $key);
        } else {
            $t->redis_unchanged_ok($before,
                "$c->{file}: Redis is unchanged");
        }
        return;
    }

    is($res->{status}, $expect, "$name is answered $expect")
        or diag(MdmWatch::Test::describe($res));
    unlike($res->{headers}{'content-type'} // '', qr{application/json},
        "$c->{file}: the answer is no JSON challenge");
    is($t->upstream_count, $upstream,
        "$c->{file}: nothing reached the MDM server");
    $t->redis_unchanged_ok($before, "$c->{file}: Redis is unchanged");
}


# a challenge adds its security token, for the UDID in canonical form,
# with a TTL; beside it Redis may keep that watch's list of its latest
# security tokens, and drop older security tokens of the same watch from
# it: nothing else changes
sub challenge_state_ok {
    my ($c, $st, $before) = @_;
    my $after = $t->redis_snapshot;
    my $key = 'mdm_watch:security_token:' . ($st // '?');
    my ($udid) = ($after->{$key} // '') =~ /^string ([0-9A-Z-]{1,64}) ttl$/;

    ok(!exists $before->{$key} && defined $udid,
        "$c->{file}: Redis gains the security token, for an upper-case"
        . ' UDID, with a TTL') or diag($after->{$key} // 'no such key');

    my $u = quotemeta($udid // '?');
    my $list = qr/^(?:added|changed) mdm_watch:challenges:$u[ :]/;
    my $older = '^removed mdm_watch:security_token:\S+ \(string '
        . "$u ttl\\)\$";
    my @other = grep {
        !(/^added \Q$key\E / || (defined $udid && (/$list/ || /$older/)))
    } MdmWatch::Test::redis_diff($before, $after);
    ok(!@other, "$c->{file}: nothing else changes in Redis but that"
        . " watch's own security tokens") or diag(join "\n", @other);
}
