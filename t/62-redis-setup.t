#!/usr/bin/perl

# mdm_watch_redis with db= and password=: the module authenticates and
# selects the database before any command, and when Redis refuses either
# it answers 503 and writes nothing, in no database.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes qw(sleep);

use MdmWatch::Test;

my $t = MdmWatch::Test->new;
my $watch = $t->pki->udid;
my $port;

$t->start_redis_args('--databases', '4');
$t->redis('CONFIG', 'SET', 'requirepass', 'sesame');
$t->start_upstream;

sub redis_as {
    my (@cmd) = @_;

    # the harness's client sends one command a connection: a pipeline
    # of AUTH, SELECT and the command is written by hand
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
        PeerPort => $t->port('redis'), Timeout => 2) or die "redis: $!";
    my $req = '';
    for my $c (['AUTH', 'sesame'], @cmd) {
        $req .= '*' . @$c . "\r\n" . join '',
            map { '$' . length($_) . "\r\n$_\r\n" } @$c;
    }
    print $s $req;
    my $out = '';
    my $deadline = time + 2;
    while (time < $deadline) {
        my $n = sysread($s, my $buf, 65536);
        last unless $n;
        $out .= $buf;
        last if ($out =~ tr/\n//) > @cmd;
    }
    close $s;
    return $out;
}

sub keys_in {
    my ($db) = @_;
    my $out = redis_as(['SELECT', $db], ['KEYS', 'mdm_watch:*']);
    return () if $out =~ /-ERR/;
    return sort $out =~ /^(mdm_watch:[^\r]*)\r$/mg;
}

sub run_with {
    my ($redis) = @_;
    $t->stop_nginx if $t->{pids}{nginx};
    $t->write_config($t->default_http(redis => "%%REDIS%% $redis"));
    $t->start_nginx;
    sleep 0.3;
}

run_with('db=2 password=sesame');
my $st = $t->challenge(UDID => $watch);
ok(defined $st, 'with the right password and db=2, a watch is challenged');
is_deeply([keys_in(2)],
    ["mdm_watch:challenges:$watch", "mdm_watch:security_token:$st"],
    'the security token is written to database 2');
is_deeply([keys_in(0)], [], 'nothing is written to database 0');

redis_as(['FLUSHALL']);

run_with('db=2 password=wrong');
for my $i (1 .. 3) {
    my $res = $t->enroll(UDID => $watch);
    is($res->{status}, 503, "with a wrong password, request $i gets 503");
    ok(defined $res->{headers}{'retry-after'}, "... with Retry-After");
    sleep 0.2;
}
is_deeply([map { keys_in($_) } 0 .. 3], [],
    'with a wrong password nothing is written anywhere');
$t->log_like(qr/\[error\][^\n]*redis AUTH on "[^"]*" failed/,
    'the refused AUTH is logged at error');

run_with('db=9 password=sesame');
for my $i (1 .. 3) {
    my $res = $t->enroll(UDID => $watch);
    is($res->{status}, 503,
        "with a database Redis does not have, request $i gets 503");
    sleep 0.2;
}
is_deeply([map { keys_in($_) } 0 .. 3], [],
    'with a database Redis does not have, nothing is written anywhere');
$t->log_like(qr/\[error\][^\n]*redis SELECT on "[^"]*" failed/,
    'the refused SELECT is logged at error');

$t->finish;
