#!/usr/bin/perl

# The configuration the README shows is the one that works: it passes
# nginx -t and answers a watch's first enrollment with a challenge, with
# only its file paths and addresses pointed at the test's own servers.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;

use MdmWatch::Test;

my $t = MdmWatch::Test->new;

open my $fh, '<', "$FindBin::Bin/../README.md" or die "README.md: $!";
my $readme = do { local $/; <$fh> };
close $fh;

my ($synopsis) = $readme =~ /^```nginx\n(.*?)^```/ms;
ok(defined $synopsis, 'the README has an nginx configuration');

my ($http) = $synopsis =~ /^http \{\n(.*)^\}/ms;
ok(defined $http, 'the configuration has an http block');

my %local = (
    '/etc/nginx/mdm-watch.key'  => '%%SECRET%%',
    '/etc/nginx/apple-root.pem' => '%%CA%%',
    '127.0.0.1:6379'            => '%%REDIS%%',
    '127.0.0.1:9000'            => '%%UPSTREAM%%',
);

for my $from (sort keys %local) {
    ok($http =~ s/\Q$from\E/$local{$from}/g, "the README names $from");
}

$http =~ s/^(\s*server \{\n)/$1        listen 127.0.0.1:%%PORT%%;\n/m
    or fail('the configuration has a server block');

$t->start_redis;
$t->start_upstream;
$t->write_config($http);

my ($code, $out) = $t->nginx_test;
is($code, 0, 'nginx -t accepts the README configuration')
    or diag($out);

$t->start_nginx;

my $res = $t->enroll(UDID => $t->pki->udid);
$t->challenge_ok($res,
    'the README configuration challenges a watch without a pairing token');

$t->finish;
